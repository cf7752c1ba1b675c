package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
)

// Feature is one kernel capability idend depends on, probed by trying it.
type Feature struct {
	Name string // short name, as `idend doctor` prints it
	OK   bool
	// Why it is missing, when it is.
	Err error
	// Required features make enforcement impossible when missing; the
	// others only narrow it.
	Required bool
	// What idend does with it, in plain words.
	Gives string
}

// Features is the outcome of probing the running kernel.
type Features struct {
	List []Feature
	// UnixHooks: cgroup connect_unix and sendmsg_unix (Linux 6.7+).
	UnixHooks bool
	// LSM: BPF-LSM programs load and BPF-LSM is active.
	LSM bool
}

// Missing returns the required features the kernel lacks.
func (f Features) Missing() []Feature {
	var out []Feature
	for _, x := range f.List {
		if x.Required && !x.OK {
			out = append(out, x)
		}
	}
	return out
}

// Probe tests what the running kernel supports. It loads small programs and
// creates small maps; it changes nothing else. Needs root.
func Probe() Features {
	var f Features
	add := func(name string, required bool, gives string, err error) bool {
		f.List = append(f.List, Feature{Name: name, OK: err == nil, Err: err, Required: required, Gives: gives})
		return err == nil
	}

	_, err := btf.LoadKernelSpec()
	add("btf", true, "kernel type information for the programs (CO-RE)", err)
	add("cgroup_sock_addr", true, "connect and sendmsg enforcement (TCP, UDP, IPv4, IPv6)",
		features.HaveProgramType(ebpf.CGroupSockAddr))
	add("cgroup_sock", true, "raw socket enforcement (inet sockets)",
		features.HaveProgramType(ebpf.CGroupSock))
	add("raw_tracepoint", true, "exec, fork and exit tracking",
		features.HaveProgramType(ebpf.RawTracepoint))
	add("bpf_send_signal", true, "exec enforcement by SIGKILL at the exec tracepoint",
		features.HaveProgramHelper(ebpf.RawTracepoint, asm.FnSendSignal))
	add("ringbuf", true, "event delivery", features.HaveMapType(ebpf.RingBuf))
	add("lpm_trie", true, "network rules", features.HaveMapType(ebpf.LPMTrie))
	add("hash_of_maps", true, "atomic policy replacement", features.HaveMapType(ebpf.HashOfMaps))
	add("cgroup2", true, "session cgroups", cgroup2Present())
	f.UnixHooks = add("connect_unix", false, "unix socket path enforcement (Linux 6.7+)",
		probeAttachType(ebpf.CGroupSockAddr, ebpf.AttachCgroupUnixConnect))
	f.LSM = add("bpf_lsm", false, "exec refused with EPERM before it starts (else: killed at exec); packet, vsock and other non-inet sockets refused",
		probeLSM())
	add("cgroup_kill", false, "session teardown in one write (Linux 5.14+)", cgroupKillPresent())
	return f
}

// probeAttachType loads a program that returns 1 for an attach type: the
// kernel refuses attach types it does not know.
func probeAttachType(pt ebpf.ProgramType, at ebpf.AttachType) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       pt,
		AttachType: at,
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.LoadImm(asm.R0, 1, asm.DWord),
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	return prog.Close()
}

// probeLSM checks that BPF-LSM programs load and that "bpf" is in the
// kernel's active LSM list (the lsm= boot parameter).
func probeLSM() error {
	if err := features.HaveProgramType(ebpf.LSM); err != nil {
		return err
	}
	data, err := os.ReadFile("/sys/kernel/security/lsm")
	if err != nil {
		return fmt.Errorf("read active LSMs: %w", err)
	}
	for _, name := range strings.Split(strings.TrimSpace(string(data)), ",") {
		if name == "bpf" {
			return nil
		}
	}
	return fmt.Errorf("bpf is not an active LSM (%s): boot with lsm=...,bpf: %w",
		strings.TrimSpace(string(data)), ErrNotSupported)
}

func cgroup2Present() error {
	data, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return fmt.Errorf("read /proc/filesystems: %w", err)
	}
	if !strings.Contains(string(data), "\tcgroup2\n") {
		return fmt.Errorf("cgroup2 filesystem: %w", ErrNotSupported)
	}
	return nil
}

func cgroupKillPresent() error {
	// The root cgroup has no cgroup.kill; this process's own cgroup, or
	// any child of the root, shows whether the kernel has it.
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[2] != "cgroup2" {
			continue
		}
		candidates, _ := filepath.Glob(filepath.Join(fields[1], "*", "cgroup.procs"))
		if own, err := os.ReadFile("/proc/self/cgroup"); err == nil {
			for _, l := range strings.Split(string(own), "\n") {
				if rest, ok := strings.CutPrefix(l, "0::"); ok && rest != "/" {
					candidates = append([]string{filepath.Join(fields[1], rest, "cgroup.procs")}, candidates...)
				}
			}
		}
		for _, c := range candidates {
			if _, err := os.Stat(c); err != nil {
				continue
			}
			_, err := os.Stat(filepath.Join(filepath.Dir(c), "cgroup.kill"))
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("cgroup.kill: %w", ErrNotSupported)
			}
			return err
		}
		// Only the root exists: create a child to look.
		probe, err := os.MkdirTemp(fields[1], "idend-probe-")
		if err != nil {
			return fmt.Errorf("no child cgroup to check: %w", err)
		}
		defer os.Remove(probe)
		if _, err := os.Stat(filepath.Join(probe, "cgroup.kill")); err != nil {
			return fmt.Errorf("cgroup.kill: %w", ErrNotSupported)
		}
		return nil
	}
	return errors.New("no cgroup2 mount to check")
}
