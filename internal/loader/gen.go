package loader

// The compiler and flags come from the Makefile (BPF2GO_CC, BPF2GO_CFLAGS,
// BPF2GO_STRIP), which pins clang; run `make generate`.
//go:generate go tool bpf2go -target bpfel -type session -type event_header -type net_event -type unix_event -type exec_event -type fork_event -type exit_event -type port_rules -type port_rule -type v4_key -type v6_key -type unix_key -type exec_key net ../../bpf/net.bpf.c
//go:generate go tool bpf2go -target bpfel -no-global-types exec ../../bpf/exec.bpf.c
//go:generate go tool bpf2go -target bpfel -no-global-types unix ../../bpf/unix.bpf.c
//go:generate go tool bpf2go -target bpfel -no-global-types lsm ../../bpf/lsm.bpf.c
