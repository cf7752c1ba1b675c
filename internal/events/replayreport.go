package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/idend/idend/internal/events/recordpb"
)

// Difference is a kernel action whose verdict the evaluator decides
// differently.
type Difference struct {
	Seq     uint64
	WallNs  int64
	Session string
	// Process is the process key.
	Process string
	Kind    string
	// What describes the action as FormatText does.
	What string
	// Recorded is the kernel's verdict ("allow", "killed", ...) and
	// Evaluated the evaluator's ("allow", "deny", "audit", "escalate").
	Recorded  string
	Evaluated string
	// Reason is the evaluator's.
	Reason string
}

// KindSummary counts the evaluated actions of one kind.
type KindSummary struct {
	Kind    string
	Actions uint64
	// Differ counts the actions decided differently, of which NewlyDenied
	// went through and would now be refused, and NewlyAllowed the reverse.
	Differ       uint64
	NewlyDenied  uint64
	NewlyAllowed uint64
}

// ReplayReport is what Replay found.
type ReplayReport struct {
	// Intent is the name and hash of the intent evaluated in place of
	// the recorded ones, or "" when the recorded intents were checked.
	Intent string
	// Session is the session replayed, or "" for all.
	Session string
	// Records counts the records read, LastSeq is the last one's seq.
	Records uint64
	LastSeq uint64
	// Sessions counts the sessions opened in the recording.
	Sessions int
	// Actions counts the kernel actions evaluated; Skipped those that
	// could not be, because the recording lacks their session's opening
	// or its intent does not compile (see Warnings).
	Actions uint64
	Skipped uint64
	// Differ counts the actions decided differently, and Differences
	// lists them in recording order unless ReplayOptions.OnDifference
	// received them.
	Differ      uint64
	Differences []Difference
	// Kinds summarises the evaluated actions by kind, in the order of
	// Kinds.
	Kinds []KindSummary
	// Warnings say, in the order they arose, what limits the replay.
	Warnings []string

	byKind [kindCount]*KindSummary
}

func newReplayReport(opts ReplayOptions) *ReplayReport {
	rep := &ReplayReport{Session: opts.Session}
	if opts.Intent != nil {
		rep.Intent = fmt.Sprintf("%s (%s)", opts.Intent.Name, opts.Intent.Hash())
	}
	return rep
}

func (rep *ReplayReport) summary(r *recordpb.Record) *KindSummary {
	k := kindIndex(r)
	s := rep.byKind[k]
	if s == nil {
		s = &KindSummary{Kind: kindNames[k]}
		rep.byKind[k] = s
	}
	return s
}

func (rp *replayer) finish() *ReplayReport {
	rp.warnUnresolved()
	rep := rp.rep
	rep.Kinds = rep.Kinds[:0]
	for _, s := range rep.byKind {
		if s != nil {
			rep.Kinds = append(rep.Kinds, *s)
		}
	}
	return rep
}

// WriteText writes the report for people: a header, one line per
// difference, the summary by kind and the warnings.
func (rep *ReplayReport) WriteText(w io.Writer) error {
	var b bytes.Buffer
	if rep.Intent != "" {
		fmt.Fprintf(&b, "replay with intent %s in place of the recorded intents\n", rep.Intent)
	} else {
		fmt.Fprintf(&b, "replay checking recorded verdicts against the evaluator\n")
	}
	if rep.Session != "" {
		fmt.Fprintf(&b, "session %s\n", rep.Session)
	}
	fmt.Fprintf(&b, "%d records, %d sessions opened, %d actions evaluated, %d not evaluated\n",
		rep.Records, rep.Sessions, rep.Actions, rep.Skipped)

	fmt.Fprintf(&b, "\n%d differences\n", rep.Differ)
	for _, d := range rep.Differences {
		fmt.Fprintf(&b, "%d %s %s %s %s %s: %s -> %s: %s\n", d.Seq, formatTime(d.WallNs),
			field(d.Session), field(d.Process), d.Kind, d.What, d.Recorded, d.Evaluated, d.Reason)
	}

	fmt.Fprintf(&b, "\n%-14s %10s %10s %13s %13s\n", "KIND", "ACTIONS", "DIFFER",
		"NEWLY-DENIED", "NEWLY-ALLOWED")
	for _, s := range rep.Kinds {
		fmt.Fprintf(&b, "%-14s %10d %10d %13d %13d\n", s.Kind, s.Actions, s.Differ,
			s.NewlyDenied, s.NewlyAllowed)
	}
	if len(rep.Warnings) > 0 {
		fmt.Fprintf(&b, "\nwarnings\n")
	}
	for _, msg := range rep.Warnings {
		fmt.Fprintf(&b, "  %s\n", msg)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteJSON writes the report as JSON objects, one per line: one per
// difference ("type": "difference"), then the summary ("type":
// "summary").
func (rep *ReplayReport) WriteJSON(w io.Writer) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	for _, d := range rep.Differences {
		if err := enc.Encode(differenceJSON(d)); err != nil {
			return err
		}
	}
	kinds := make([]object, 0, len(rep.Kinds))
	for _, s := range rep.Kinds {
		kinds = append(kinds, object{"kind": s.Kind, "actions": s.Actions, "differ": s.Differ,
			"newly_denied": s.NewlyDenied, "newly_allowed": s.NewlyAllowed})
	}
	summary := object{
		"type": "summary", "records": rep.Records, "last_seq": rep.LastSeq,
		"sessions": rep.Sessions, "actions": rep.Actions, "skipped": rep.Skipped,
		"differences": rep.Differ, "kinds": kinds, "warnings": rep.Warnings,
	}
	put(summary, "intent", rep.Intent)
	put(summary, "session", rep.Session)
	if rep.Warnings == nil {
		summary["warnings"] = []string{}
	}
	if err := enc.Encode(summary); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

func differenceJSON(d Difference) object {
	o := object{
		"type": "difference", "seq": d.Seq,
		"time": time.Unix(0, d.WallNs).UTC().Format(time.RFC3339Nano),
		"kind": d.Kind, "what": d.What, "recorded": d.Recorded,
		"evaluated": d.Evaluated, "reason": d.Reason,
	}
	put(o, "session", d.Session)
	put(o, "process", d.Process)
	return o
}
