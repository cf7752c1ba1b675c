package main

import (
	"fmt"
	"io"
	"strings"
)

const preamble = `# Kernels

What idend finds and enforces on each kernel that ` + "`make test-vm`" + ` boots
(test/vm/kernels.txt) and on the kernel of the machine that ran it. The
features and what is enforced come from ` + "`idend doctor --json`" + ` run on that
kernel; the test results from the privileged tests run in the same boot.
Regenerate with ` + "`VM_UPDATE_DOCS=1 make test-vm`" + `; do not edit by hand.

Kernel-version caveats and their workarounds are in KNOWN_ISSUES.md.
`

// write renders the entries as markdown.
func write(w io.Writer, entries []entry) error {
	var b strings.Builder
	b.WriteString(preamble)

	b.WriteString("\n## Kernels\n\n")
	row(&b, append([]string{""}, names(entries)...))
	rule(&b, len(entries)+1)
	row(&b, append([]string{"kernel"}, column(entries, func(e entry) string { return "`" + e.kernel + "`" })...))
	row(&b, append([]string{"BPF-LSM"}, column(entries, entry.bpfLSM)...))
	row(&b, append([]string{"active LSMs"}, column(entries, func(e entry) string { return e.lsm })...))
	row(&b, append([]string{"tests in the guest"}, column(entries, testsCell)...))
	if pkgs := testedPackages(entries); len(pkgs) > 0 {
		fmt.Fprintf(&b, "\nThe guests ran the tests of %s.\n", strings.Join(pkgs, ", "))
	}

	notes := writeFeatures(&b, entries)
	writeEnforcement(&b, entries)
	if len(notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for i, n := range notes {
			fmt.Fprintf(&b, "%d. %s\n", i+1, n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeFeatures writes one row per feature doctor probes and returns the
// notes the cells refer to: why a feature is missing.
func writeFeatures(b *strings.Builder, entries []entry) []string {
	var order []string
	gives := make(map[string]string)
	required := make(map[string]bool)
	for _, e := range entries {
		if e.doctor == nil {
			continue
		}
		for _, f := range e.doctor.Features {
			if _, ok := gives[f.Name]; !ok {
				order = append(order, f.Name)
			}
			gives[f.Name] = f.Gives
			required[f.Name] = required[f.Name] || f.Required
		}
	}

	b.WriteString("\n## Kernel features\n\n")
	b.WriteString("Required features make enforcement impossible when missing; " +
		"the others narrow it.\n\n")
	row(b, append([]string{"feature", "what idend does with it"}, names(entries)...))
	rule(b, len(entries)+2)

	var notes []string
	noteIndex := make(map[string]int)
	for _, name := range order {
		label := "`" + name + "`"
		if required[name] {
			label += " (required)"
		}
		cells := []string{label, gives[name]}
		for _, e := range entries {
			cells = append(cells, featureCell(e, name, &notes, noteIndex))
		}
		row(b, cells)
	}
	return notes
}

func featureCell(e entry, name string, notes *[]string, index map[string]int) string {
	if e.doctor == nil {
		return "not run"
	}
	for _, f := range e.doctor.Features {
		if f.Name != name {
			continue
		}
		if f.OK {
			return "yes"
		}
		if f.Error == "" {
			return "no"
		}
		n, ok := index[f.Error]
		if !ok {
			*notes = append(*notes, f.Error)
			n = len(*notes)
			index[f.Error] = n
		}
		return fmt.Sprintf("no [%d]", n)
	}
	return "not probed"
}

// writeEnforcement lists, per entry, what idend enforces and what not.
func writeEnforcement(b *strings.Builder, entries []entry) {
	b.WriteString("\n## What idend enforces\n")
	for _, e := range entries {
		fmt.Fprintf(b, "\n### %s (`%s`, BPF-LSM %s)\n\n", e.name, e.kernel, e.bpfLSM())
		if e.doctor == nil {
			b.WriteString("idend doctor did not run here.\n")
			continue
		}
		for _, s := range e.doctor.Enforced {
			fmt.Fprintf(b, "- enforced: %s\n", s)
		}
		for _, s := range e.doctor.NotEnforced {
			fmt.Fprintf(b, "- not enforced: %s\n", s)
		}
	}
}

// testsCell is the guest's result and the packages that did not pass.
func testsCell(e entry) string {
	if e.result == "" {
		return "n/a (host)"
	}
	var failed []string
	for _, t := range e.tests {
		if !t.passed {
			failed = append(failed, t.String())
		}
	}
	if len(failed) == 0 {
		return e.result
	}
	return e.result + ": " + strings.Join(failed, ", ")
}

// testedPackages lists the packages any guest ran, in first-seen order.
func testedPackages(entries []entry) []string {
	var pkgs []string
	seen := make(map[string]bool)
	for _, e := range entries {
		for _, t := range e.tests {
			if !seen[t.pkg] {
				seen[t.pkg] = true
				pkgs = append(pkgs, t.pkg)
			}
		}
	}
	return pkgs
}

func names(entries []entry) []string {
	return column(entries, func(e entry) string { return e.name })
}

func column(entries []entry, f func(entry) string) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = strings.ReplaceAll(f(e), "|", `\|`)
	}
	return out
}

func row(b *strings.Builder, cells []string) {
	b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

func rule(b *strings.Builder, n int) {
	b.WriteString(strings.Repeat("|---", n) + "|\n")
}
