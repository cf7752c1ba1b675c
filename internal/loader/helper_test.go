package loader

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a workload for syscalls python cannot make:
// run with IDEND_TEST_HELPER set, it performs one call and prints "ok" or
// "errno N".
func TestMain(m *testing.M) {
	if name := os.Getenv("IDEND_TEST_HELPER"); name != "" {
		fmt.Println(result(helpers[name](os.Args[1:])))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var helpers = map[string]func(args []string) error{
	"sendmmsg":         sendmmsg,
	"io_uring_connect": ioUringConnect,
	"net_batch":        netBatch,
}

func result(err error) string {
	if errno, ok := err.(unix.Errno); ok {
		return fmt.Sprintf("errno %d", int(errno))
	}
	if err != nil {
		return err.Error()
	}
	return "ok"
}

// helper runs this test binary as a helper inside the cgroup dir.
func helper(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	t.Setenv("IDEND_TEST_HELPER", name)
	out, _ := run(t, dir, os.Args[0], args...)
	os.Unsetenv("IDEND_TEST_HELPER")
	return strings.TrimSpace(out)
}

func loopback4(port string) (*unix.RawSockaddrInet4, error) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, err
	}
	sa := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	sa.Port = uint16(p>>8) | uint16(p&0xff)<<8
	return sa, nil
}

// sendmmsg sends two datagrams to 127.0.0.1:args[0] with one sendmmsg(2).
func sendmmsg(args []string) error {
	sa, err := loopback4(args[0])
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)

	payload := []byte("x")
	var msgs [2]struct {
		hdr unix.Msghdr
		len uint32
		_   uint32
	}
	iov := unix.Iovec{Base: &payload[0], Len: 1}
	for i := range msgs {
		msgs[i].hdr.Name = (*byte)(unsafe.Pointer(sa))
		msgs[i].hdr.Namelen = unix.SizeofSockaddrInet4
		msgs[i].hdr.Iov = &iov
		msgs[i].hdr.Iovlen = 1
	}
	_, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), 2, 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// io_uring ABI, from include/uapi/linux/io_uring.h.
type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

type uringSQE struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off, addr     uint64
	len, opFlags  uint32
	userData      uint64
	_             [24]byte
}

type uringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

const (
	opConnect      = 16
	offSQRing      = 0
	offCQRing      = 0x8000000
	offSQEs        = 0x10000000
	enterGetEvents = 1
)

// ioUringConnect connects a TCP socket to 127.0.0.1:args[0] through an
// io_uring IORING_OP_CONNECT rather than connect(2).
func ioUringConnect(args []string) error {
	sa, err := loopback4(args[0])
	if err != nil {
		return err
	}
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sock)

	var p uringParams
	ring, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return fmt.Errorf("io_uring_setup: %w", errno)
	}
	defer unix.Close(int(ring))

	sq, err := unix.Mmap(int(ring), offSQRing, int(p.sqOff.array+p.sqEntries*4), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	cq, err := unix.Mmap(int(ring), offCQRing, int(p.cqOff.cqes+p.cqEntries*16), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	sqes, err := unix.Mmap(int(ring), offSQEs, int(p.sqEntries*64), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}

	sqe := (*uringSQE)(unsafe.Pointer(&sqes[0]))
	*sqe = uringSQE{opcode: opConnect, fd: int32(sock), addr: uint64(uintptr(unsafe.Pointer(sa))), off: unix.SizeofSockaddrInet4}
	tail := (*uint32)(unsafe.Pointer(&sq[p.sqOff.tail]))
	mask := *(*uint32)(unsafe.Pointer(&sq[p.sqOff.ringMask]))
	(*[1 << 16]uint32)(unsafe.Pointer(&sq[p.sqOff.array]))[*tail&mask] = 0
	atomic.AddUint32(tail, 1)

	_, _, errno = unix.Syscall6(unix.SYS_IO_URING_ENTER, ring, 1, 1, enterGetEvents, 0, 0)
	if errno != 0 {
		return fmt.Errorf("io_uring_enter: %w", errno)
	}
	head := atomic.LoadUint32((*uint32)(unsafe.Pointer(&cq[p.cqOff.head])))
	cqMask := *(*uint32)(unsafe.Pointer(&cq[p.cqOff.ringMask]))
	cqe := (*uringCQE)(unsafe.Pointer(&cq[p.cqOff.cqes+(head&cqMask)*16]))
	if cqe.res < 0 {
		return unix.Errno(-cqe.res)
	}
	return nil
}

// netBatch performs one call per argument and prints one result per line.
// An argument is "kind,args...":
//
//	connect|sendto|fastopen,tcp|udp,4|6,ADDR,PORT  (fastopen: sendto with
//	    MSG_FASTOPEN; family 6 with an IPv4 address sends it IPv4-mapped)
//	socket,FAMILY,TYPE,PROTOCOL
//	uconnect|usendto,HEXPATH  (a unix socket address, "@" for the NUL of
//	    an abstract name, hex-encoded)
//
// Each call is made on a new socket.
func netBatch(args []string) error {
	for _, a := range args {
		fmt.Println(result(netCall(a)))
	}
	return nil
}

func netCall(spec string) error {
	f := strings.Split(spec, ",")
	switch {
	case f[0] == "socket" && len(f) == 4:
		return socketCall(f[1:])
	case (f[0] == "uconnect" || f[0] == "usendto") && len(f) == 2:
		return unixCall(f[0], f[1])
	case len(f) == 5:
		return inetCall(f)
	}
	return fmt.Errorf("bad action %q", spec)
}

func socketCall(f []string) error {
	var n [3]int
	for i := range n {
		v, err := strconv.Atoi(f[i])
		if err != nil {
			return err
		}
		n[i] = v
	}
	fd, err := unix.Socket(n[0], n[1]|unix.SOCK_CLOEXEC, n[2])
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func unixCall(kind, hexPath string) error {
	name, err := hex.DecodeString(hexPath)
	if err != nil {
		return err
	}
	typ := unix.SOCK_STREAM
	if kind == "usendto" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)

	// The address as the kernel gets it: sun_path holds exactly the
	// bytes of name, the length counts no terminator.
	var sa unix.RawSockaddrUnix
	sa.Family = unix.AF_UNIX
	if len(name) > len(sa.Path) {
		return fmt.Errorf("unix path of %d bytes", len(name))
	}
	for i, b := range name {
		sa.Path[i] = int8(b)
	}
	if len(name) > 0 && name[0] == '@' {
		sa.Path[0] = 0
	}
	size := uintptr(2 + len(name))
	ptr := uintptr(unsafe.Pointer(&sa))
	var errno unix.Errno
	if kind == "uconnect" {
		_, _, errno = unix.Syscall(unix.SYS_CONNECT, uintptr(fd), ptr, size)
	} else {
		b := []byte("x")
		_, _, errno = unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1, 0, ptr, size)
	}
	if errno != 0 {
		return errno
	}
	return nil
}

func inetCall(f []string) error {
	addr, err := netip.ParseAddr(f[3])
	if err != nil {
		return err
	}
	port, err := strconv.ParseUint(f[4], 10, 16)
	if err != nil {
		return err
	}
	typ := unix.SOCK_STREAM
	if f[1] == "udp" {
		typ = unix.SOCK_DGRAM
	}
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(port), Addr: addr.As16()}
	family := unix.AF_INET6
	if f[2] == "4" {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: int(port), Addr: addr.As4()}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	// A connect that nobody answers ends rather than hangs.
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return err
	}

	switch f[0] {
	case "connect":
		return finishConnect(fd, unix.Connect(fd, sa))
	case "sendto":
		return unix.Sendto(fd, []byte("x"), 0, sa)
	case "fastopen":
		return finishConnect(fd, unix.Sendto(fd, []byte("x"), unix.MSG_FASTOPEN, sa))
	}
	return fmt.Errorf("bad action kind %q", f[0])
}

// finishConnect waits out a connect that a signal interrupted: with a send
// timeout set the kernel does not restart it, but the connect goes on (it
// passed idend's hook, which refuses before anything blocks), and its
// outcome arrives as the socket's error.
func finishConnect(fd int, err error) error {
	if err != unix.EINTR {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		_, err := unix.Poll(pfd, 2000)
		if err != unix.EINTR {
			break
		}
	}
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soErr != 0 {
		return unix.Errno(soErr)
	}
	return nil
}
