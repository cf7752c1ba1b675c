package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/cgroup"
	"github.com/idend/idend/internal/intent"
)

// TCP states of include/net/tcp_states.h.
const (
	tcpEstablished = 1
	tcpSynSent     = 2
	tcpListen      = 10
)

// cutConnections destroys (sock_diag SOCK_DESTROY, the peer gets a reset)
// the outgoing TCP connections of the processes in the cgroup tree dir
// whose destination c does not allow; with c nil, all of them. A
// connection the processes accepted on a port they listen on is left
// alone: intents judge egress. It returns how many it destroyed.
func cutConnections(dir string, c *intent.Compiled) (int, error) {
	inodes, err := socketInodes(dir)
	if err != nil || len(inodes) == 0 {
		return 0, err
	}
	cut := 0
	var errs []error
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := netlink.SocketDiagTCP(family)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			errs = append(errs, fmt.Errorf("list TCP sockets: %w", err))
			continue
		}
		listening := make(map[uint16]bool)
		for _, s := range socks {
			if s.State == tcpListen && inodes[s.INode] {
				listening[s.ID.SourcePort] = true
			}
		}
		for _, s := range socks {
			if !inodes[s.INode] || (s.State != tcpEstablished && s.State != tcpSynSent) ||
				listening[s.ID.SourcePort] || allowed(c, s) {
				continue
			}
			if err := destroy(s); err != nil {
				errs = append(errs, err)
				continue
			}
			cut++
		}
	}
	return cut, errors.Join(errs...)
}

func allowed(c *intent.Compiled, s *netlink.Socket) bool {
	if c == nil {
		return false
	}
	addr, ok := netip.AddrFromSlice(s.ID.Destination)
	if !ok {
		return false
	}
	d := intent.Evaluate(c, intent.Action{Kind: intent.Connect, Addr: addr.Unmap(),
		Port: s.ID.DestinationPort, Proto: intent.ProtoTCP})
	return d.Verdict.Allowed()
}

// destroyRequest is struct inet_diag_req_v2 naming one socket.
type destroyRequest struct {
	family uint8
	id     netlink.SocketID
}

func (r *destroyRequest) Len() int { return 56 }

func (r *destroyRequest) Serialize() []byte {
	b := make([]byte, 56)
	b[0] = r.family
	b[1] = unix.IPPROTO_TCP
	binary.LittleEndian.PutUint32(b[4:], 0xfff) // every state
	binary.BigEndian.PutUint16(b[8:], r.id.SourcePort)
	binary.BigEndian.PutUint16(b[10:], r.id.DestinationPort)
	if r.family == unix.AF_INET {
		copy(b[12:16], r.id.Source.To4())
		copy(b[28:32], r.id.Destination.To4())
	} else {
		copy(b[12:28], r.id.Source.To16())
		copy(b[28:44], r.id.Destination.To16())
	}
	binary.LittleEndian.PutUint32(b[44:], r.id.Interface)
	binary.LittleEndian.PutUint32(b[48:], r.id.Cookie[0])
	binary.LittleEndian.PutUint32(b[52:], r.id.Cookie[1])
	return b
}

// destroy sends SOCK_DESTROY for one socket, of either family (the
// netlink package's SocketDestroy handles IPv4 only).
func destroy(s *netlink.Socket) error {
	req := nl.NewNetlinkRequest(nl.SOCK_DESTROY, unix.NLM_F_ACK)
	req.AddData(&destroyRequest{family: s.Family, id: s.ID})
	if _, err := req.Execute(unix.NETLINK_INET_DIAG, 0); err != nil {
		return fmt.Errorf("destroy connection %s:%d -> %s:%d: %w",
			s.ID.Source, s.ID.SourcePort, s.ID.Destination, s.ID.DestinationPort, err)
	}
	return nil
}

// socketInodes returns the inodes of the sockets open in the processes of
// the cgroup tree dir.
func socketInodes(dir string) (map[uint32]bool, error) {
	out := make(map[uint32]bool)
	err := cgroup.TreeProcs(dir, func(pid int) { addSocketInodes(pid, out) })
	return out, err
}

func addSocketInodes(pid int, out map[uint32]bool) {
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return // gone meanwhile
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue
		}
		rest, ok := strings.CutPrefix(target, "socket:[")
		if !ok {
			continue
		}
		if ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 32); err == nil {
			out[uint32(ino)] = true
		}
	}
}
