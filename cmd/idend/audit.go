package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/idend/idend/internal/events"
)

// recordingsDir is where the daemon writes its recording under a state
// directory.
func recordingsDir(stateDir string) string {
	return filepath.Join(stateDir, "recordings")
}

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the recording",
		Long: `Commands that check idend's recording. They read the files on disk and work
without a running daemon.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newAuditVerifyCmd())
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	var stateDir string
	var requireSeal bool
	cmd := &cobra.Command{
		Use:   "verify [DIR]",
		Short: "Check the recording's hash chain",
		Long: `Verify walks every segment of a recording and checks every record's checksum
and its hash link to the record before it, the links between segments, that
records missing from the start were deleted by retention (as retention
records in the chain say), and that the recording reaches the record it was
last sealed at. Editing, deleting, reordering or truncating any record breaks
the chain from there on.

DIR is the recording directory; by default <state-dir>/recordings. It works
without a running daemon, on a copy of the directory as well.

Verify prints what it checked: segments, records, records retired by
retention, records the daemon lost (counted in gap records) and the number of
records of each kind. When the chain is broken it exits with status 1 and
names the first broken link: the file, the record, its offset, and what is
wrong (edited, deleted, reordered or truncated).`,
		Example: `  sudo idend audit verify
  idend audit verify /backup/idend/recordings`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("unexpected argument %q", args[1])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := recordingsDir(stateDir)
			if len(args) == 1 {
				dir = args[0]
			}
			return runAuditVerify(cmd.OutOrStdout(), dir, requireSeal)
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", defaultStateDir,
		"daemon state `DIR` whose recordings to verify")
	cmd.Flags().BoolVar(&requireSeal, "sealed", false,
		"fail unless the recording is sealed: records cut from the end of an unsealed\n"+
			"recording cannot be told from a daemon that is running or crashed")
	return cmd
}

func runAuditVerify(w io.Writer, dir string, requireSeal bool) error {
	rep, err := events.Verify(dir)

	var broken *events.ChainError
	if err != nil && !errors.As(err, &broken) {
		return fmt.Errorf("verify %s: %w", dir, err)
	}
	if broken != nil {
		fmt.Fprintf(w, "%s: BROKEN\n", dir)
		fmt.Fprintf(w, "  first broken link: %s\n", broken.File)
		fmt.Fprintf(w, "    record %d at offset %d: %s: %s\n",
			broken.Seq, broken.Offset, broken.Problem, broken.Detail)
		fmt.Fprintln(w, "  before it:")
		printVerifyReport(w, rep, "    ", false)
		return &exitError{Status: exitFailure, Msg: "recording chain broken: " + broken.Error()}
	}

	fmt.Fprintf(w, "%s: ok\n", dir)
	printVerifyReport(w, rep, "  ", true)
	if requireSeal && !rep.Sealed {
		return &exitError{Status: exitFailure, Msg: "recording not sealed: records may be missing " +
			"from its end (a daemon still running or crashed, or the end cut off)"}
	}
	return nil
}

// printVerifyReport prints the counts of rep; whole says whether the
// whole recording was read, so that its seal is known.
func printVerifyReport(w io.Writer, rep events.Report, indent string, whole bool) {
	fmt.Fprintf(w, "%ssegments  %d\n", indent, rep.Segments)
	if rep.Records > 0 {
		fmt.Fprintf(w, "%srecords   %d (records %d to %d)\n",
			indent, rep.Records, rep.FirstSeq, rep.LastSeq)
	} else {
		fmt.Fprintf(w, "%srecords   0\n", indent)
	}
	fmt.Fprintf(w, "%sretired   %d (deleted by retention, accounted for)\n", indent, rep.Retired)
	fmt.Fprintf(w, "%slost      %d (dropped before recording, counted in gap records)\n",
		indent, rep.Lost)
	if whole {
		sealed := "no (the daemon seals it when it stops; until then records cut " +
			"from the end cannot be told apart: see --sealed)"
		if rep.Sealed {
			sealed = "yes"
		}
		fmt.Fprintf(w, "%ssealed    %s\n", indent, sealed)
	}
	if len(rep.ByKind) > 0 {
		fmt.Fprintf(w, "%sby kind   %s\n", indent, kindCounts(rep.ByKind))
	}
}

// kindCounts writes counts by kind in schema order: "exec 3, connect 12".
func kindCounts(byKind map[string]uint64) string {
	kinds := append(slices.Clone(events.Kinds), events.KindUnknown)
	var parts []string
	for _, k := range kinds {
		if n := byKind[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	return strings.Join(parts, ", ")
}
