package intent

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Describe writes in plain text what c allows, as `idend intent check`
// prints it: the mode, each prefix with its merged ports, the unix sockets,
// raw sockets, the executable files and what compiled to nothing.
func (c *Compiled) Describe(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "on violation: %s\n", c.Mode)
	describePrefixes(bw, "egress (IPv4)", c.V4)
	describePrefixes(bw, "egress (IPv6)", c.V6)
	describeList(bw, "unix sockets", "none", c.Unix)

	raw := "denied"
	if c.RawSockets {
		raw = "allowed"
	}
	fmt.Fprintf(bw, "raw sockets: %s\n", raw)

	if c.ExecAny {
		fmt.Fprintf(bw, "exec: any program\n")
	} else {
		files := make([][2]string, len(c.ExecFiles))
		for i, f := range c.ExecFiles {
			files[i] = [2]string{f.String(), c.Names[f]}
		}
		describeTable(bw, "exec (dev:inode)", "no program", files)
	}

	if len(c.Unresolved) > 0 {
		describeList(bw, "compiled to nothing", "", c.Unresolved)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("describe intent: %w", err)
	}
	return nil
}

func describePrefixes(w io.Writer, title string, rules []PrefixRule) {
	rows := make([][2]string, len(rules))
	for i, r := range rules {
		ports := make([]string, len(r.Ports))
		for j, p := range r.Ports {
			ports[j] = p.String()
		}
		rows[i] = [2]string{r.Prefix.String(), strings.Join(ports, " ")}
	}
	describeTable(w, title, "none", rows)
}

func describeList(w io.Writer, title, none string, items []string) {
	if len(items) == 0 {
		fmt.Fprintf(w, "%s: %s\n", title, none)
		return
	}
	fmt.Fprintf(w, "%s:\n", title)
	for _, s := range items {
		fmt.Fprintf(w, "  %s\n", s)
	}
}

// describeTable writes rows of two columns under title, the first column
// padded to its widest entry.
func describeTable(w io.Writer, title, none string, rows [][2]string) {
	if len(rows) == 0 {
		fmt.Fprintf(w, "%s: %s\n", title, none)
		return
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	fmt.Fprintf(w, "%s:\n", title)
	for _, r := range rows {
		fmt.Fprintf(w, "  %s\n", strings.TrimRight(fmt.Sprintf("%-*s  %s", width, r[0], r[1]), " "))
	}
}
