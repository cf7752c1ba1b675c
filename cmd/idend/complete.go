package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/events"
)

// completeTimeout bounds the call to the daemon a completion makes.
const completeTimeout = 2 * time.Second

// completeSessions completes the IDs of the open sessions, as the daemon
// lists them to the caller, each described by its intent. It completes
// nothing when the daemon cannot be reached.
func completeSessions(g *globals) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		c, err := dial(g.socket)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer c.Close()

		ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
		defer cancel()
		resp, err := c.api.ListSessions(ctx, &apipb.ListSessionsRequest{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var ids []cobra.Completion
		for _, s := range resp.GetSessions() {
			ids = append(ids, cobra.CompletionWithDesc(s.GetId(), s.GetIntent().GetName()))
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeFirstSession completes a session ID as the first argument.
func completeFirstSession(g *globals) cobra.CompletionFunc {
	sessions := completeSessions(g)
	return func(cmd *cobra.Command, args []string, toComplete string) (
		[]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return sessions(cmd, args, toComplete)
	}
}

// completeEscalations completes the escalation IDs of the session named by
// the first argument, as the second.
func completeEscalations(g *globals) cobra.CompletionFunc {
	first := completeFirstSession(g)
	return func(cmd *cobra.Command, args []string, toComplete string) (
		[]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) != 1 {
			return first(cmd, args, toComplete)
		}
		c, err := dial(g.socket)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer c.Close()

		ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
		defer cancel()
		s, err := c.api.GetSession(ctx, &apipb.GetSessionRequest{Id: args[0]})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var ids []cobra.Completion
		for _, e := range s.GetEscalations() {
			if e.GetState() == "pending" {
				ids = append(ids, cobra.CompletionWithDesc(e.GetId(), e.GetAction()))
			}
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeList completes one more item of a comma-separated list of
// choices.
func completeList(choices []string) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) (
		[]cobra.Completion, cobra.ShellCompDirective) {
		done := ""
		if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
			done = toComplete[:i+1]
		}
		var out []cobra.Completion
		for _, c := range choices {
			out = append(out, done+c)
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
}

// verdicts lists the verdict names events --verdict takes.
var verdicts = []string{"allow", "audit", "deny", "escalate", "killed", "lsm_denied"}

// kinds lists the kind names events --kind takes.
var kinds = events.Kinds
