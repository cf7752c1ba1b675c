package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/loader"
)

func newDoctorCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor [--json]",
		Short: "Report what this kernel supports and what idend will enforce with it",
		Long: `Doctor probes the running kernel the way the daemon does, by loading small
BPF programs and creating small maps, and says in plain words which kernel
features are there, what idend does with each, and therefore what it will
enforce in the kernel and what it can only record. It changes nothing on the
system. It needs root, as loading BPF programs does.

A required feature that is missing makes enforcement impossible: doctor then
exits with status 1. Optional features narrow what is enforced: without the
connect_unix hook (Linux 6.7) unix socket paths are not checked; without an
active BPF LSM a forbidden program is killed at exec instead of being refused
before it starts.

With --json, doctor prints one JSON object on one line:
  {"kernel": "6.18.0", "ok": true,
   "features": [{"name", "ok", "required", "gives", "error"}, ...],
   "enforced": ["..."], "not_enforced": ["..."]}
where ok is false when a required feature is missing.`,
		Example: `  sudo idend doctor
  sudo idend doctor --json | jq -r '.features[] | select(.ok | not) | .name'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDoctor(cmd.OutOrStdout(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object instead of text")
	return cmd
}

// doctorFeature is a probed feature as doctor --json prints it.
type doctorFeature struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Required bool   `json:"required"`
	Gives    string `json:"gives"`
	Error    string `json:"error,omitempty"`
}

// doctorReport is what doctor prints.
type doctorReport struct {
	Kernel      string          `json:"kernel"`
	OK          bool            `json:"ok"`
	Features    []doctorFeature `json:"features"`
	Enforced    []string        `json:"enforced"`
	NotEnforced []string        `json:"not_enforced"`
}

func runDoctor(w io.Writer, asJSON bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("doctor needs root: it loads BPF programs to probe the kernel")
	}

	rep := newDoctorReport(kernelRelease(), loader.Probe())
	if asJSON {
		if err := json.NewEncoder(w).Encode(rep); err != nil {
			return err
		}
	} else {
		printDoctor(w, rep)
	}
	if !rep.OK {
		return &exitError{Status: exitFailure}
	}
	return nil
}

func newDoctorReport(kernel string, f loader.Features) doctorReport {
	rep := doctorReport{Kernel: kernel, OK: len(f.Missing()) == 0}
	for _, x := range f.List {
		df := doctorFeature{Name: x.Name, OK: x.OK, Required: x.Required, Gives: x.Gives}
		if x.Err != nil {
			df.Error = x.Err.Error()
		}
		rep.Features = append(rep.Features, df)
	}
	rep.Enforced, rep.NotEnforced = enforcement(f)
	return rep
}

// enforcement says in words what idend enforces with the features f, and
// what it cannot.
func enforcement(f loader.Features) (enforced, not []string) {
	if missing := f.Missing(); len(missing) > 0 {
		names := make([]string, len(missing))
		for i, m := range missing {
			names[i] = m.Name
		}
		return nil, []string{"nothing can be enforced: the kernel lacks " +
			strings.Join(names, ", ") + "; the daemon will not start"}
	}

	enforced = []string{
		"outbound connections and datagrams (TCP, UDP; IPv4, IPv6) at connect and sendmsg",
		"raw sockets and inet sockets other than TCP and UDP, at creation, " +
			"unless the intent allows raw_sockets",
	}
	// The cgroup hook sees inet sockets only; BPF-LSM's socket_create
	// sees every family.
	if f.LSM {
		enforced = append(enforced, "sockets of families other than inet, unix and netlink "+
			"(packet, vsock, ...), at creation, unless the intent allows raw_sockets")
	} else {
		not = append(not, "packet and vsock sockets: refused only for commands idend run starts "+
			"(its seccomp filter), unless the intent allows raw_sockets")
	}
	if f.UnixHooks {
		enforced = append(enforced, "unix socket paths, at connect and sendmsg")
	} else {
		not = append(not, "unix socket paths: any unix socket may be used, unrecorded "+
			"(the connect_unix hook needs Linux 6.7)")
	}
	if f.LSM {
		enforced = append(enforced, "programs, refused with EPERM before they start")
	} else {
		enforced = append(enforced, "programs, killed at exec before they run an instruction")
		not = append(not, "refusing a forbidden exec: the exec happens, then its process is "+
			"killed (no active BPF LSM; boot with lsm=...,bpf to refuse it)")
	}
	return enforced, not
}

func printDoctor(w io.Writer, rep doctorReport) {
	fmt.Fprintf(w, "Kernel %s\n\n", rep.Kernel)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FEATURE\tSTATE\tWHAT IDEND DOES WITH IT")
	for _, f := range rep.Features {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, featureState(f), f.Gives)
		if f.Error != "" {
			fmt.Fprintf(tw, "\t\t  %s\n", f.Error)
		}
	}
	tw.Flush()

	fmt.Fprintln(w)
	if !rep.OK {
		fmt.Fprintln(w, "idend cannot enforce anything on this kernel:")
		printList(w, rep.NotEnforced)
		return
	}
	fmt.Fprintln(w, "idend will enforce, in the kernel:")
	printList(w, rep.Enforced)
	if len(rep.NotEnforced) > 0 {
		fmt.Fprintln(w, "idend will not enforce:")
		printList(w, rep.NotEnforced)
	}
	fmt.Fprintln(w, "What idend enforces it also records, allowed or denied, with the session.")
}

func featureState(f doctorFeature) string {
	switch {
	case f.OK:
		return "ok"
	case f.Required:
		return "MISSING"
	}
	return "absent"
}

func printList(w io.Writer, items []string) {
	for _, s := range items {
		fmt.Fprintf(w, "  - %s\n", s)
	}
}

// kernelRelease returns the running kernel's release and machine, for
// display only.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
}
