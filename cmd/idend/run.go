package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/api/apipb"
)

// Exit statuses of run when the command cannot be started, as shells use
// them.
const (
	exitNotExecutable = 126
	exitNotFound      = 127
)

// forwarded are the signals run passes on to its command.
var forwarded = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT}

type runOptions struct {
	open      openOptions
	session   string
	user      string
	allowRoot bool
}

const runLong = `Run CMD inside a session and exit with its status.

With --session ID, CMD joins an open session. With --intent FILE, run opens a
session for CMD (printing "idend: session ID" on stderr), and closes it when
CMD ends: whatever CMD left running in the session is killed then.

CMD is placed in the session's cgroup before it is executed, so that
everything it does, and everything its children do, is held to the session's
intent from its first instruction. It runs with no_new_privs set, so no
set-user-ID program can give it more privileges than it starts with. As root,
run drops to --user NAME (its uid, gid and groups, with HOME, USER and LOGNAME
set for it), and refuses to run CMD as root unless --allow-root is given.

CMD finds the session in its environment: IDEND_SESSION holds its ID and
IDEND_SOCKET the daemon's API socket, so that it can open sub-sessions of its
own with idend session open --parent "$IDEND_SESSION".

SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to run are passed on to CMD. CMD
runs in a process group of its own; on a terminal it gets the terminal's
foreground when run has it, and when CMD stops (Ctrl-Z) run stops too, so
that the shell's fg and bg work. If run is killed, CMD is killed with it.

Exit status: CMD's own status; 128+N when CMD was killed by signal N; 126
when CMD cannot be executed, 127 when it is not found; 1 when run fails
before CMD starts, 2 on bad usage.`

const runExample = `  # Run an agent as user "agent" under an intent, in a session of its own.
  sudo idend run --intent agent.yaml --user agent -- python3 agent.py --task retry

  # Join a session opened earlier, with an SVID identity.
  id=$(sudo idend session open --intent agent.yaml --svid svid.pem --svid-key key.pem)
  sudo idend run --session "$id" --user agent -- ./agent

  # From inside a session, run a sub-agent with a narrower slice.
  idend run --intent narrow.yaml --parent "$IDEND_SESSION" -- ./sub-agent`

func newRunCmd(g *globals) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:     "run (--session ID | --intent FILE) [flags] -- CMD [ARGS...]",
		Short:   "Run a command inside a session and exit with its status",
		Long:    runLong,
		Example: runExample,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("missing argument CMD: give the command to run after --")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			return runRun(cmd.Context(), g, &o, args)
		},
	}
	fs := cmd.Flags()
	fs.SetInterspersed(false)
	fs.StringVar(&o.session, "session", "", "join the open session `ID`")
	o.open.addFlags(fs, true)
	fs.Lookup("parent").Usage = "with --intent: open a sub-session of session `ID`"
	fs.StringVar(&o.user, "user", "", "run CMD as user `NAME` (a name or a numeric uid)")
	fs.BoolVar(&o.allowRoot, "allow-root", false, "allow CMD to run as root")
	_ = cmd.RegisterFlagCompletionFunc("session", completeSessions(g))
	_ = cmd.RegisterFlagCompletionFunc("parent", completeSessions(g))
	return cmd
}

func (o *runOptions) check() error {
	switch {
	case o.session == "" && o.open.intent == "":
		return usagef("missing flag: give --session ID or --intent FILE")
	case o.session != "" && o.open.intent != "":
		return usagef("--session and --intent exclude each other")
	case o.session != "":
		return o.open.onlyWithIntent()
	}
	return o.open.check()
}

func runRun(ctx context.Context, g *globals, o *runOptions, argv []string) error {
	cred, err := lookupUser(o.user, o.allowRoot)
	if err != nil {
		return err
	}
	if cred.change && os.Geteuid() != 0 {
		return fmt.Errorf("--user %s needs root", o.user)
	}

	// Catch the signals to forward from now on, so that none ends run
	// between opening a session and closing it.
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, forwarded...)
	defer signal.Stop(sigc)

	id := o.session
	var status int
	if id == "" {
		c, err := dial(g.socket)
		if err != nil {
			return err
		}
		defer c.Close()

		s, err := openSession(ctx, c, &o.open)
		if err != nil {
			return err
		}
		id = s.GetId()
		fmt.Fprintf(os.Stderr, "idend: session %s\n", id)
		defer func() {
			reason := fmt.Sprintf("idend run: command ended with status %d", status)
			err := closeSession(context.Background(), c, id, reason)
			// The command may have closed its own session.
			if err != nil && !strings.Contains(err.Error(), "no such session") {
				fmt.Fprintf(os.Stderr, "idend: close session %s: %v\n", id, err)
			}
		}()
	}

	status, err = runChild(g.socket, id, o, argv, sigc)
	if err != nil {
		return err
	}
	if status != 0 {
		return &exitError{Status: status}
	}
	return nil
}

// runChild runs CMD through the re-executed `idend __exec`, forwarding
// the signals that arrive on sigc, and returns its exit status.
func runChild(socket, id string, o *runOptions, argv []string, sigc chan os.Signal) (int, error) {
	select {
	case sig := <-sigc:
		return 128 + int(sig.(syscall.Signal)), nil
	default:
	}

	tty := openTerminal()
	cmd, err := execCmd(socket, id, o, argv, tty)
	if err != nil {
		return 0, err
	}

	// Pdeathsig follows the thread that starts the child: keep this one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", argv[0], err)
	}
	defer cmd.Process.Release()
	if tty != nil {
		// Taking the terminal back from the background must not stop
		// run. Ignored only now, so that the child does not inherit it.
		signal.Ignore(unix.SIGTTOU)
	}

	done := make(chan struct{})
	defer close(done)
	go forward(cmd.Process, sigc, done)

	ws, err := waitChild(cmd.Process.Pid, tty)
	tty.restore(cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	if ws.Signaled() {
		if ws.Signal() == unix.SIGKILL {
			fmt.Fprintf(os.Stderr, "idend: %s was killed (SIGKILL); if idend stopped a program outside "+
				"the intent, `idend events --session %s --verdict killed` says which\n", argv[0], id)
		}
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// execCmd returns the command that re-executes idend as `idend __exec`
// to enter session id and become argv. It runs in a process group of its
// own, in the foreground of tty when run is there, and is killed when run
// dies.
func execCmd(socket, id string, o *runOptions, argv []string, tty *terminal) (*exec.Cmd, error) {
	abs, err := filepath.Abs(socket)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", socket, err)
	}
	args := []string{"__exec", "--socket", abs, "--session", id}
	if o.user != "" {
		args = append(args, "--user", o.user)
	}
	if o.allowRoot {
		args = append(args, "--allow-root")
	}

	cmd := exec.Command("/proc/self/exe", append(append(args, "--"), argv...)...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = setEnv(os.Environ(), sessionEnv+"="+id, socketEnv+"="+abs)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if tty != nil && tty.foreground {
		cmd.SysProcAttr.Foreground = true
		cmd.SysProcAttr.Ctty = tty.fd
	}
	return cmd, nil
}

// forward passes the signals arriving on sigc to p until done closes.
func forward(p *os.Process, sigc <-chan os.Signal, done <-chan struct{}) {
	for {
		select {
		case sig := <-sigc:
			_ = p.Signal(sig)
		case <-done:
			return
		}
	}
}

// waitChild waits for the child pid to exit. On a terminal, when the
// child stops (Ctrl-Z, or a read from the background), run stops too, the
// way a shell's job does; when continued, it continues the child.
func waitChild(pid int, tty *terminal) (unix.WaitStatus, error) {
	opts := 0
	if tty != nil {
		opts = unix.WUNTRACED
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, opts, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("wait for command: %w", err)
		}
		if ws.Stopped() {
			tty.suspend(pid)
			continue
		}
		return ws, nil
	}
}

// terminal is the controlling terminal on run's stdin.
type terminal struct {
	fd   int
	pgrp int // run's process group
	// foreground is true when run started in the terminal's foreground.
	foreground bool
}

// openTerminal returns the controlling terminal on stdin, or nil when
// stdin is not one.
func openTerminal() *terminal {
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	if err != nil {
		return nil
	}
	pgrp := unix.Getpgrp()
	return &terminal{fd: 0, pgrp: pgrp, foreground: fg == pgrp}
}

// hand gives the terminal's foreground from the process group from to the
// process group to, when from has it.
func (t *terminal) hand(from, to int) {
	if fg, err := unix.IoctlGetInt(t.fd, unix.TIOCGPGRP); err == nil && fg == from {
		_ = unix.IoctlSetPointerInt(t.fd, unix.TIOCSPGRP, to)
	}
}

// suspend stops run like its stopped child, pid, which leads its process
// group, and continues the child when run is continued: in the terminal's
// foreground when run was put there (fg), else in the background (bg).
func (t *terminal) suspend(pid int) {
	t.hand(pid, t.pgrp)
	// Stop through this thread: a SIGSTOP sent to the process may be taken
	// by another thread while this one runs on and continues the child.
	_ = unix.Tgkill(os.Getpid(), unix.Gettid(), unix.SIGSTOP)

	t.hand(t.pgrp, pid)
	_ = unix.Kill(-pid, unix.SIGCONT)
}

// restore takes the terminal back from the child's process group pid.
func (t *terminal) restore(pid int) {
	if t != nil {
		t.hand(pid, t.pgrp)
	}
}

func newExecCmd(g *globals) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:    "__exec --session ID [--user NAME] [--allow-root] -- CMD [ARGS...]",
		Short:  "Enter a session and execute a command (used by idend run)",
		Hidden: true,
		Args:   namedArgsMin("CMD"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runExec(cmd.Context(), g, &o, args)
		},
	}
	fs := cmd.Flags()
	fs.SetInterspersed(false)
	fs.StringVar(&o.session, "session", "", "session to enter")
	fs.StringVar(&o.user, "user", "", "user to run as")
	fs.BoolVar(&o.allowRoot, "allow-root", false, "allow running as root")
	return cmd
}

// namedArgsMin wants at least the arguments named.
func namedArgsMin(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return usagef("missing argument %s", names[len(args)])
		}
		return nil
	}
}

// runExec is the child side of run: it moves itself into the session's
// cgroup, drops its privileges and becomes CMD. It returns only on error.
func runExec(ctx context.Context, g *globals, o *runOptions, argv []string) error {
	// no_new_privs and the parent-death signal are set per thread: set
	// them on the thread that calls execve.
	runtime.LockOSThread()
	ppid := os.Getppid()
	nameThreads("idend")

	if o.session == "" {
		return usagef("missing flag --session ID")
	}
	cred, err := lookupUser(o.user, o.allowRoot)
	if err != nil {
		return err
	}
	raw, err := enterSession(ctx, g.socket, o.session)
	if err != nil {
		return err
	}

	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	if err := cred.apply(); err != nil {
		return err
	}
	// Changing credentials cleared the parent-death signal.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent-death signal: %w", err)
	}
	if os.Getppid() != ppid {
		return &exitError{Status: 128 + int(unix.SIGKILL),
			Msg: "idend run ended before the command started"}
	}
	if err := installSeccomp(raw); err != nil {
		return err
	}
	return execCommand(argv, cred.env(os.Environ()))
}

// nameThreads sets the command name of every thread of idend, which the
// kernel took from /proc/self/exe as "exe", so that what idend does before
// it becomes CMD is recorded under its own name. Threads started later
// inherit it.
func nameThreads(name string) {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		_ = os.WriteFile("/proc/self/task/"+t.Name()+"/comm", []byte(name), 0)
	}
}

// enterSession asks the daemon to move this process into the session's
// cgroup, and reports whether the session allows raw sockets.
func enterSession(ctx context.Context, socket, id string) (bool, error) {
	c, err := dial(socket)
	if err != nil {
		return false, err
	}
	defer c.Close()

	cctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.api.EnterSession(cctx, &apipb.EnterSessionRequest{Session: id})
	if err != nil {
		return false, fmt.Errorf("enter session %s: %w", id, c.err(err))
	}
	return resp.GetRawSockets(), nil
}

// execCommand replaces idend with argv, found in $PATH.
func execCommand(argv, env []string) error {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		status := exitNotFound
		if errors.Is(err, fs.ErrPermission) {
			status = exitNotExecutable
		}
		return &exitError{Status: status, Msg: err.Error()}
	}

	err = unix.Exec(path, argv, env)
	status := exitNotExecutable
	if errors.Is(err, unix.ENOENT) {
		status = exitNotFound
	}
	return &exitError{Status: status, Msg: fmt.Sprintf("exec %s: %v", argv[0], err)}
}

// credential is the user run executes its command as.
type credential struct {
	name   string
	uid    int
	gid    int
	groups []int
	home   string
	// change is false when the process already runs as the user.
	change bool
}

// lookupUser resolves --user, or the caller when name is "". It refuses
// root unless allowRoot.
func lookupUser(name string, allowRoot bool) (*credential, error) {
	if name == "" {
		cred := &credential{uid: os.Geteuid(), gid: os.Getegid()}
		if cred.uid == 0 && !allowRoot {
			return nil, usagef("refusing to run the command as root: give --user NAME, or --allow-root")
		}
		return cred, nil
	}

	u, err := findUser(name)
	if err != nil {
		return nil, err
	}
	cred := &credential{name: u.Username, home: u.HomeDir, change: true}
	cred.uid, _ = strconv.Atoi(u.Uid)
	cred.gid, _ = strconv.Atoi(u.Gid)
	if cred.uid == 0 && !allowRoot {
		return nil, usagef("refusing to run the command as root (--user %s): "+
			"give --allow-root to allow it", name)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups of user %s: %w", name, err)
	}
	for _, s := range gids {
		if gid, err := strconv.Atoi(s); err == nil {
			cred.groups = append(cred.groups, gid)
		}
	}
	if cred.uid == os.Geteuid() && os.Geteuid() != 0 {
		cred.change = false
	}
	return cred, nil
}

// findUser looks a user up by name, then by numeric uid.
func findUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	if _, nerr := strconv.Atoi(name); nerr == nil {
		if u, err := user.LookupId(name); err == nil {
			return u, nil
		}
	}
	var unknown user.UnknownUserError
	if errors.As(err, &unknown) {
		return nil, usagef("invalid value %q for --user: no such user", name)
	}
	return nil, fmt.Errorf("look up user %s: %w", name, err)
}

// apply switches the process to the credential: groups, then gid, then
// uid, on every thread.
func (c *credential) apply() error {
	if !c.change {
		return nil
	}
	if err := syscall.Setgroups(c.groups); err != nil {
		return fmt.Errorf("set groups of %s: %w", c.name, err)
	}
	if err := syscall.Setgid(c.gid); err != nil {
		return fmt.Errorf("set gid %d: %w", c.gid, err)
	}
	if err := syscall.Setuid(c.uid); err != nil {
		return fmt.Errorf("set uid %d: %w", c.uid, err)
	}
	return nil
}

// env returns environ with the variables naming the user set for it.
func (c *credential) env(environ []string) []string {
	if !c.change {
		return environ
	}
	return setEnv(environ, "HOME="+c.home, "USER="+c.name, "LOGNAME="+c.name)
}

// setEnv returns environ with each of vars ("KEY=value") set, replacing
// any earlier value of the same key.
func setEnv(environ []string, vars ...string) []string {
	out := make([]string, 0, len(environ)+len(vars))
	keys := make(map[string]bool, len(vars))
	for _, v := range vars {
		keys[strings.SplitN(v, "=", 2)[0]] = true
	}
	for _, v := range environ {
		if !keys[strings.SplitN(v, "=", 2)[0]] {
			out = append(out, v)
		}
	}
	return append(out, vars...)
}
