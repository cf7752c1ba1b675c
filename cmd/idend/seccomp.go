package main

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// What idend run's seccomp filter refuses. The cgroup programs judge what
// a session reaches; these calls reach into other processes instead —
// other sessions' processes of the same user among them — and would carry
// a session's work out under another session's intent. The filter is
// inherited by every descendant and, with no_new_privs, cannot be lifted.
var crossProcessCalls = []uint32{
	unix.SYS_PTRACE,
	unix.SYS_PROCESS_VM_READV,
	unix.SYS_PROCESS_VM_WRITEV,
	unix.SYS_PIDFD_GETFD,
	unix.SYS_KCMP,
}

// Socket families outside every cgroup hook (packet sockets see frames,
// vsock reaches the hypervisor host): refused unless the session's intent
// allows raw_sockets. BPF-LSM refuses them too where it is active.
var rawFamilies = []uint32{unix.AF_PACKET, unix.AF_VSOCK}

// auditArch is the AUDIT_ARCH_* of the running binary's syscall ABI.
func auditArch() (uint32, error) {
	switch runtime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64, nil
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64, nil
	}
	return 0, fmt.Errorf("seccomp filter: architecture %s not supported", runtime.GOARCH)
}

// seccompFilter assembles the filter: calls of another ABI are refused
// outright (x32 numbers on x86-64 included), so that no number escapes the
// list by being spelled in another ABI.
func seccompFilter(rawSockets bool) ([]bpf.RawInstruction, error) {
	arch, err := auditArch()
	if err != nil {
		return nil, err
	}
	const (
		offNr   = 0
		offArch = 4
		offArg0 = 16 // low half of args[0] on little-endian
		x32Bit  = 0x40000000
	)
	deny := bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)}
	allow := bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW}

	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: arch, SkipTrue: 1},
		deny,
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32Bit, SkipFalse: 1},
		deny,
	}
	for _, nr := range crossProcessCalls {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: nr, SkipTrue: 1}, deny)
	}
	if !rawSockets {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.SYS_SOCKET, SkipTrue: 1 + 2*uint8(len(rawFamilies))})
		prog = append(prog, bpf.LoadAbsolute{Off: offArg0, Size: 4})
		for _, f := range rawFamilies {
			prog = append(prog, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: f, SkipTrue: 1}, deny)
		}
	}
	prog = append(prog, allow)
	return bpf.Assemble(prog)
}

// installSeccomp applies the filter to the calling thread, which must be
// the one that execs, after no_new_privs is set.
func installSeccomp(rawSockets bool) error {
	raw, err := seccompFilter(rawSockets)
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	return nil
}
