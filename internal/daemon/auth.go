package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// caller is the process at the other end of an API connection, as the
// kernel reports it (SO_PEERCRED), and the session it runs in.
type caller struct {
	pid, uid, gid int
	groups        []int
	// cgroup is the caller's cgroup v2 path relative to the mount.
	cgroup string
}

// peerCreds is a grpc transport credential for unix sockets: it records
// the peer's kernel credentials on each connection and secures nothing
// else (the socket is local).
type peerCreds struct{}

type peerInfo struct {
	credentials.CommonAuthInfo
	cred *unix.Ucred
}

func (peerInfo) AuthType() string { return "peercred" }

func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("peer credentials need a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var cred *unix.Ucred
	var credErr error
	err = raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read peer credentials: %w", err)
	}
	return c, peerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, cred: cred}, nil
}

func (peerCreds) ClientHandshake(ctx context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, peerInfo{}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (p peerCreds) Clone() credentials.TransportCredentials { return p }

func (peerCreds) OverrideServerName(string) error { return nil }

// callerOf reads who is calling from the request context.
func callerOf(ctx context.Context) (*caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, fmt.Errorf("no peer: %w", ErrDenied)
	}
	info, ok := p.AuthInfo.(peerInfo)
	if !ok || info.cred == nil {
		return nil, fmt.Errorf("no peer credentials: %w", ErrDenied)
	}
	c := &caller{pid: int(info.cred.Pid), uid: int(info.cred.Uid), gid: int(info.cred.Gid)}
	cg, err := procCgroup(c.pid)
	if err != nil {
		return nil, fmt.Errorf("caller cgroup: %w", err)
	}
	c.cgroup = cg
	c.groups = procGroups(c.pid)
	return c, nil
}

// procCgroup returns the cgroup v2 path of pid ("0::" line).
func procCgroup(pid int) (string, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return rest, nil
		}
	}
	return "", errors.New("no cgroup v2 entry")
}

// procGroups returns the supplementary groups of pid.
func procGroups(pid int) []int {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			var out []int
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.Atoi(f); err == nil {
					out = append(out, g)
				}
			}
			return out
		}
	}
	return nil
}

// isAdmin reports whether c may manage every session: root, or a member of
// the configured admin group, outside any session.
func isAdmin(c *caller, adminGroup string) bool {
	if c.uid == 0 {
		return true
	}
	if adminGroup == "" {
		return false
	}
	g, err := user.LookupGroup(adminGroup)
	if err != nil {
		return false
	}
	gid, _ := strconv.Atoi(g.Gid)
	if c.gid == gid {
		return true
	}
	for _, x := range c.groups {
		if x == gid {
			return true
		}
	}
	return false
}
