package loader

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// ProgramStats is the kernel's run-time accounting of one attached
// program.
type ProgramStats struct {
	// Name is the program's name in the kernel (connect4, sched_exec ...).
	Name string
	// RunCount counts the program's runs.
	RunCount uint64
	// RunTime is the time spent in the program over all its runs.
	RunTime time.Duration
	// RecursionMisses counts the runs the kernel skipped because another
	// BPF program was running on the same CPU (Linux 5.12+).
	RecursionMisses uint64
}

// PerRun returns the mean run time, zero before the first counted run.
func (s ProgramStats) PerRun() time.Duration {
	if s.RunCount == 0 {
		return 0
	}
	return s.RunTime / time.Duration(s.RunCount)
}

// Stats reads the run-time statistics of every program the loader has
// attached, in attach order, through the links: a program adopted from an
// earlier daemon is the one counted. The kernel counts runs and run time
// only while statistics are enabled (ebpf.EnableStats with
// BPF_STATS_RUN_TIME, or the sysctl kernel.bpf_stats_enabled; Linux 5.8+);
// otherwise the figures stay where they were. Safe for concurrent use.
func (l *Loader) Stats() ([]ProgramStats, error) {
	l.mu.Lock()
	defer l.mu.Unlock()

	out := make([]ProgramStats, 0, len(l.links))
	for _, lk := range l.links {
		info, err := lk.Info()
		if err != nil {
			return nil, fmt.Errorf("read link info: %w", err)
		}
		st, err := programStats(info.Program)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func programStats(id ebpf.ProgramID) (ProgramStats, error) {
	prog, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return ProgramStats{}, fmt.Errorf("open program %d: %w", id, err)
	}
	defer prog.Close()

	info, err := prog.Info()
	if err != nil {
		return ProgramStats{}, fmt.Errorf("read program %d info: %w", id, err)
	}
	st, err := prog.Stats()
	if err != nil {
		return ProgramStats{}, fmt.Errorf("read program %s statistics: %w", info.Name, err)
	}
	return ProgramStats{
		Name:            info.Name,
		RunCount:        st.RunCount,
		RunTime:         st.Runtime,
		RecursionMisses: st.RecursionMisses,
	}, nil
}
