package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/attest"
)

func newSessionCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Open, list, inspect, close and widen sessions",
		Long: `A session is a cgroup whose processes idend holds to an intent. Opening one
gives it an identity and an expiry (the intent's ttl, or --ttl); when it
expires or is closed, its processes are killed, its connections cut and its
rules removed. A process inside a session may open sub-sessions of its own
session, never wider than it.

These commands talk to the daemon over its API socket (--socket).`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(
		newSessionOpenCmd(g),
		newSessionListCmd(g),
		newSessionShowCmd(g),
		newSessionCloseCmd(g),
		newSessionApproveCmd(g),
	)
	return cmd
}

// openOptions are the flags of session open, also taken by run.
type openOptions struct {
	intent         string
	parent         string
	principal      string
	ttl            time.Duration
	svid           string
	svidKey        string
	jwtSVID        string
	credentialFile string
}

func (o *openOptions) addFlags(fs *pflag.FlagSet, withParent bool) {
	fs.StringVar(&o.intent, "intent", "", "hold the session to the intent in `FILE`")
	if withParent {
		fs.StringVar(&o.parent, "parent", "",
			"open a sub-session of session `ID`; its intent must be a subset of the parent's")
	}
	fs.StringVar(&o.principal, "principal", "",
		"`NAME` of the human or system the session acts for "+
			"(default $SUDO_USER, else $USER, else the uid)")
	fs.DurationVar(&o.ttl, "ttl", 0,
		"end the session after `DURATION` (like 20m), sooner than the intent's ttl")
	fs.StringVar(&o.svid, "svid", "",
		"identify with the X.509-SVID in PEM `FILE` (certificate chain, leaf first)")
	fs.StringVar(&o.svidKey, "svid-key", "", "PEM private key `FILE` of --svid")
	fs.StringVar(&o.jwtSVID, "jwt-svid", "", "identify with the JWT-SVID in `FILE`")
	fs.StringVar(&o.credentialFile, "credential-file", "",
		"identify with the bearer credential (API token, client secret) in `FILE`; "+
			"the daemon keeps only a keyed fingerprint of it")
}

// check refuses flag combinations that cannot work.
func (o *openOptions) check() error {
	if o.intent == "" {
		return usagef("missing flag --intent FILE")
	}
	if o.ttl < 0 {
		return usagef("invalid value %s for --ttl: must be positive", o.ttl)
	}
	if (o.svid == "") != (o.svidKey == "") {
		return usagef("--svid and --svid-key go together")
	}
	if o.svid != "" && o.jwtSVID != "" {
		return usagef("--svid and --jwt-svid exclude each other")
	}
	return nil
}

const sessionOpenLong = `Open a session held to the intent in --intent FILE and print its ID.

The session's identity is the strongest one given:
  --svid CERT --svid-key KEY  an X.509-SVID; idend proves possession of the key
                              by signing a one-time challenge from the daemon
  --jwt-svid FILE             a JWT-SVID whose audience includes idend
  (neither)                   the daemon attests the calling process and maps
                              its facts to a SPIFFE ID by its registration
                              entries
--credential-file FILE adds a bearer credential (an API token the agent uses);
the daemon records only a keyed fingerprint of it, and uses it as the identity
when nothing stronger is known.

With --parent, the session is a sub-session: its intent must be a subset of
the parent's in every part, and it closes with its parent.

With --json, the session is printed as one JSON object on one line, with the
fields id, parent, ancestors, cgroup, principal, identity (spiffe_id, strength,
fingerprint), intent (name, hash, purpose, on_violation), created, expires,
escalations and compiled.`

const sessionOpenExample = `  # Open a session for an agent and run it there.
  id=$(sudo idend session open --intent agent.yaml --ttl 20m)
  sudo idend run --session "$id" --user agent -- ./agent

  # Open one with an X.509-SVID from SPIRE, as JSON.
  idend session open --intent agent.yaml --svid svid.pem --svid-key key.pem --json

  # From inside a session, hand a sub-agent a narrower slice.
  idend session open --intent narrow.yaml --parent "$IDEND_SESSION"`

func newSessionOpenCmd(g *globals) *cobra.Command {
	var o openOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "open --intent FILE [flags]",
		Short:   "Open a session and print its ID",
		Long:    sessionOpenLong,
		Example: sessionOpenExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			return runSessionOpen(cmd.Context(), cmd.OutOrStdout(), g, &o, asJSON)
		},
	}
	o.addFlags(cmd.Flags(), true)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the session as one JSON object")
	_ = cmd.RegisterFlagCompletionFunc("parent", completeSessions(g))
	return cmd
}

func runSessionOpen(ctx context.Context, w io.Writer, g *globals, o *openOptions,
	asJSON bool) error {
	c, err := dial(g.socket)
	if err != nil {
		return err
	}
	defer c.Close()

	s, err := openSession(ctx, c, o)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(w, s)
	}
	_, err = fmt.Fprintln(w, s.GetId())
	return err
}

// openSession builds the request of o, proves its identity and opens the
// session.
func openSession(ctx context.Context, c *client, o *openOptions) (*apipb.Session, error) {
	req, err := openRequest(o)
	if err != nil {
		return nil, err
	}
	if o.svid != "" {
		if err := proveSVID(ctx, c, req, o.svid, o.svidKey); err != nil {
			return nil, err
		}
	}

	ctx, cancel := c.call(ctx)
	defer cancel()
	s, err := c.api.OpenSession(ctx, req)
	return s, c.err(err)
}

func openRequest(o *openOptions) (*apipb.OpenSessionRequest, error) {
	data, err := os.ReadFile(o.intent)
	if err != nil {
		return nil, fmt.Errorf("read intent: %w", err)
	}
	req := &apipb.OpenSessionRequest{
		Intent:     data,
		IntentFile: o.intent,
		Parent:     o.parent,
		Principal:  o.principal,
		TtlSeconds: int64(o.ttl.Round(time.Second) / time.Second),
	}
	if req.Principal == "" {
		req.Principal = defaultPrincipal()
	}
	if o.ttl > 0 && req.TtlSeconds == 0 {
		req.TtlSeconds = 1
	}

	if o.jwtSVID != "" {
		token, err := readSecret(o.jwtSVID, "JWT-SVID")
		if err != nil {
			return nil, err
		}
		req.JwtSvid = string(token)
	}
	if o.credentialFile != "" {
		req.Credential, err = readSecret(o.credentialFile, "credential")
		if err != nil {
			return nil, err
		}
	}
	return req, nil
}

// proveSVID adds the X.509-SVID in certFile to req, with a signature of a
// fresh challenge from the daemon made with the key in keyFile.
func proveSVID(ctx context.Context, c *client, req *apipb.OpenSessionRequest,
	certFile, keyFile string) error {
	svid, err := loadSVID(certFile, keyFile)
	if err != nil {
		return err
	}

	cctx, cancel := c.call(ctx)
	defer cancel()
	ch, err := c.api.Challenge(cctx, &apipb.ChallengeRequest{})
	if err != nil {
		return c.err(err)
	}

	sig, err := attest.SignChallenge(svid.PrivateKey, ch.GetChallenge())
	if err != nil {
		return err
	}
	for _, cert := range svid.Certificates {
		req.SvidChain = append(req.SvidChain, cert.Raw)
	}
	req.Challenge = ch.GetChallenge()
	req.ChallengeSignature = sig
	return nil
}

// onlyWithIntent refuses the flags that shape a new session when none is
// opened.
func (o *openOptions) onlyWithIntent() error {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"--parent", o.parent != ""}, {"--principal", o.principal != ""}, {"--ttl", o.ttl != 0},
		{"--svid", o.svid != ""}, {"--svid-key", o.svidKey != ""}, {"--jwt-svid", o.jwtSVID != ""},
		{"--credential-file", o.credentialFile != ""},
	} {
		if f.set {
			return usagef("%s opens a session: give it with --intent, not --session", f.name)
		}
	}
	return nil
}

// loadSVID reads an X.509-SVID: a PEM certificate chain, leaf first, and
// the PEM private key of the leaf.
func loadSVID(certFile, keyFile string) (*x509svid.SVID, error) {
	svid, err := x509svid.Load(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load X.509-SVID %s: %w", certFile, err)
	}
	return svid, nil
}

// maxSecretSize bounds a JWT-SVID or credential file.
const maxSecretSize = 64 << 10

// readSecret reads a small file holding a token, without the trailing
// newline and spaces an editor or echo adds.
func readSecret(path, what string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(data) > maxSecretSize {
		return nil, fmt.Errorf("%s %s: larger than %d bytes", what, path, maxSecretSize)
	}
	data = bytes.TrimRight(data, " \t\r\n")
	if len(data) == 0 {
		return nil, fmt.Errorf("%s %s: empty", what, path)
	}
	return data, nil
}

// defaultPrincipal is who a session acts for when --principal is not
// given: the user who ran sudo, else the user, else the uid.
func defaultPrincipal() string {
	for _, env := range []string{"SUDO_USER", "USER"} {
		if v := os.Getenv(env); v != "" {
			return v
		}
	}
	uid := strconv.Itoa(os.Getuid())
	if u, err := user.LookupId(uid); err == nil {
		return u.Username
	}
	return uid
}

func newSessionListCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the open sessions",
		Long: `List the open sessions the caller may see, one a line: its ID, its parent,
the principal it acts for, its intent, the strength of its identity (svid,
attested or bearer) and when it expires. A process inside a session sees
only its own session and those below it.

With --json, each session is one JSON object on its own line, as session
open --json prints it.`,
		Example: `  sudo idend session list
  sudo idend session list --json | jq -r 'select(.intent.name == "payments") | .id'`,
		Aliases: []string{"ls"},
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSessionList(cmd.Context(), cmd.OutOrStdout(), g, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per session")
	return cmd
}

func runSessionList(ctx context.Context, w io.Writer, g *globals, asJSON bool) error {
	c, err := dial(g.socket)
	if err != nil {
		return err
	}
	defer c.Close()

	cctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.api.ListSessions(cctx, &apipb.ListSessionsRequest{})
	if err != nil {
		return c.err(err)
	}

	if asJSON {
		for _, s := range resp.GetSessions() {
			if err := printJSON(w, s); err != nil {
				return err
			}
		}
		return nil
	}
	return printSessionTable(w, resp.GetSessions(), time.Now())
}

func printSessionTable(w io.Writer, sessions []*apipb.Session, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPARENT\tPRINCIPAL\tINTENT\tSTRENGTH\tEXPIRES")
	for _, s := range sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.GetId(), dash(s.GetParent()),
			dash(s.GetPrincipal()), dash(s.GetIntent().GetName()),
			dash(s.GetIdentity().GetStrength()), expiresIn(s.GetExpires(), now))
	}
	return tw.Flush()
}

// expiresIn writes an RFC 3339 expiry as the time left, like "in 29m30s".
func expiresIn(expires string, now time.Time) string {
	t, err := time.Parse(time.RFC3339Nano, expires)
	if err != nil {
		return dash(expires)
	}
	left := t.Sub(now).Round(time.Second)
	if left <= 0 {
		return "expired"
	}
	return "in " + left.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newSessionShowCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID [--json]",
		Short: "Show a session: identity, intent, escalations and the rules in force",
		Long: `Show everything the daemon knows of one session: its parent chain, cgroup,
principal, identity, intent, times, the escalations it raised (pending or
approved) and the rules in force, as intent check prints them.

With --json, the session is printed as one JSON object on one line.`,
		Example: `  sudo idend session show s-7f3a2c
  idend session show "$IDEND_SESSION" --json | jq .escalations`,
		Args:              namedArgs("ID"),
		ValidArgsFunction: completeFirstSession(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSessionShow(cmd.Context(), cmd.OutOrStdout(), g, args[0], asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the session as one JSON object")
	return cmd
}

func runSessionShow(ctx context.Context, w io.Writer, g *globals, id string, asJSON bool) error {
	c, err := dial(g.socket)
	if err != nil {
		return err
	}
	defer c.Close()

	cctx, cancel := c.call(ctx)
	defer cancel()
	s, err := c.api.GetSession(cctx, &apipb.GetSessionRequest{Id: id})
	if err != nil {
		return c.err(err)
	}
	if asJSON {
		return printJSON(w, s)
	}
	return printSession(w, s, time.Now())
}

func printSession(w io.Writer, s *apipb.Session, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	field := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	field("ID", s.GetId())
	field("Parent", dash(strings.Join(s.GetAncestors(), " < ")))
	field("Cgroup", dash(s.GetCgroup()))
	field("Principal", dash(s.GetPrincipal()))
	field("Identity", identityText(s.GetIdentity()))
	in := s.GetIntent()
	field("Intent", fmt.Sprintf("%s (%s)", dash(in.GetName()), dash(in.GetHash())))
	field("Purpose", dash(in.GetPurpose()))
	field("On violation", dash(in.GetOnViolation()))
	field("Created", dash(s.GetCreated()))
	field("Expires", fmt.Sprintf("%s (%s)", dash(s.GetExpires()), expiresIn(s.GetExpires(), now)))
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nEscalations:")
	if len(s.GetEscalations()) == 0 {
		fmt.Fprintln(w, "  none")
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tSTATE\tACTION\tAPPROVED BY")
		for _, e := range s.GetEscalations() {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.GetId(), e.GetState(), e.GetAction(),
				dash(e.GetApprovedBy()))
		}
		tw.Flush()
	}

	fmt.Fprintln(w, "\nRules in force:")
	for _, line := range strings.Split(strings.TrimRight(s.GetCompiled(), "\n"), "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
	return nil
}

func identityText(id *apipb.Identity) string {
	var parts []string
	if id.GetSpiffeId() != "" {
		parts = append(parts, id.GetSpiffeId())
	}
	if id.GetFingerprint() != "" {
		parts = append(parts, "credential "+id.GetFingerprint())
	}
	if len(parts) == 0 {
		parts = append(parts, "-")
	}
	return fmt.Sprintf("%s (%s)", strings.Join(parts, ", "), dash(id.GetStrength()))
}

func newSessionCloseCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "close ID",
		Short: "Close a session: kill its processes, cut its connections, remove its rules",
		Long: `Close a session now, before its ttl. Its processes are killed, its
established TCP connections destroyed and its rules removed; its sub-sessions
close with it. The close is recorded.`,
		Example:           `  sudo idend session close s-7f3a2c`,
		Args:              namedArgs("ID"),
		ValidArgsFunction: completeFirstSession(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSessionClose(cmd.Context(), g, args[0])
		},
	}
}

func runSessionClose(ctx context.Context, g *globals, id string) error {
	c, err := dial(g.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	return closeSession(ctx, c, id, "")
}

// closeSession closes a session, recording reason with the close.
func closeSession(ctx context.Context, c *client, id, reason string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.api.CloseSession(ctx, &apipb.CloseSessionRequest{Id: id, Reason: reason})
	return c.err(err)
}

func newSessionApproveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "approve ID ESCALATION-ID",
		Short: "Widen a session by one escalated action",
		Long: `Approve one escalation of a session whose intent says on_violation: escalate.
The session is widened by exactly the refused action (one destination and
port, one program), from now until it ends; the approval is recorded with the
approver. A process cannot approve escalations of its own session.

The escalations of a session and their IDs are listed by session show and by
events --kind escalation.`,
		Example: `  sudo idend session show s-7f3a2c
  sudo idend session approve s-7f3a2c e-3`,
		Args:              namedArgs("ID", "ESCALATION-ID"),
		ValidArgsFunction: completeEscalations(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSessionApprove(cmd.Context(), cmd.OutOrStdout(), g, args[0], args[1])
		},
	}
}

func runSessionApprove(ctx context.Context, w io.Writer, g *globals, id, esc string) error {
	c, err := dial(g.socket)
	if err != nil {
		return err
	}
	defer c.Close()

	cctx, cancel := c.call(ctx)
	defer cancel()
	s, err := c.api.Approve(cctx, &apipb.ApproveRequest{Session: id, Escalation: esc})
	if err != nil {
		return c.err(err)
	}
	for _, e := range s.GetEscalations() {
		if e.GetId() == esc {
			_, err := fmt.Fprintf(w, "%s %s: %s\n", e.GetState(), esc, e.GetAction())
			return err
		}
	}
	return nil
}

// printJSON writes m as one line of JSON with the proto field names,
// unset fields included.
func printJSON(w io.Writer, m proto.Message) error {
	data, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	// protojson varies its spacing on purpose; compact it to one stable line.
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}
