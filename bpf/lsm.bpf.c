// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Enforcement that needs BPF-LSM, loaded only where it is active
 * (CONFIG_BPF_LSM and "bpf" in the lsm= boot list):
 *
 * - Exec: an exec whose file is outside a restricted session's allow list
 *   fails with EPERM, and the calling program goes on running, as it would
 *   after any refused execve; elsewhere the exec tracepoint kills the
 *   forbidden exec instead. The judgement is the tracepoint's (exec.h): an
 *   exec refused here never reaches the tracepoint, and one allowed here is
 *   recorded there, so that every exec has exactly one record.
 * - Sockets of the families the cgroup hooks never see (packet, vsock and
 *   the rest): refused at creation unless the intent allows raw_sockets.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "maps.h"
#include "file.h"
#include "exec.h"

#define EPERM 1

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define AF_NETLINK 16

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * bprm_creds_from_file rather than bprm_check_security: bprm_check_security
 * runs once per binary handler level, first on a #! script and then on its
 * interpreter, and would refuse a script whose interpreter is allowed but
 * which is not itself on the list. bprm_creds_from_file runs once per exec,
 * from begin_new_exec (Linux 5.8, commit 56305aa9b6fa), when bprm->file is
 * the file that will run: the interpreter of a script, ld.so for
 * `ld.so prog`. That is the file the tracepoint judges. The call still
 * returns its error to execve: the point of no return comes right after.
 *
 * The hook's file argument is the file credentials are computed from. It
 * differs from bprm->file only for binfmt_misc entries with the C flag
 * (the script rather than its interpreter); the judgement takes bprm->file
 * in both programs, so that both judge the same file.
 *
 * ret is what an earlier BPF-LSM program on this hook returned.
 */
SEC("lsm/bprm_creds_from_file")
int BPF_PROG(bprm_creds_file, struct linux_binprm *bprm, struct file *file, int ret)
{
	struct exec_event *ev;
	struct exec_file f;
	struct session *s;
	bool under_root;
	__u64 cgid;

	if (ret)
		return ret;
	s = current_session(&cgid, &under_root);
	if (!s && !under_root)
		return 0;
	exec_file_of(bprm, &f);
	if (exec_passes(s, &f))
		return 0; /* recorded by the tracepoint once the exec is done */

	ev = bpf_ringbuf_reserve(&denials_ring, sizeof(*ev), 0);
	if (!ev) {
		count_loss(RING_DENIALS, EVENT_EXEC);
		return -EPERM;
	}
	/*
	 * No argv: the new arguments are in the new program's memory, which
	 * is not the current one until the exec is done. The record's tid
	 * is the calling thread's: a refused exec makes no thread the leader.
	 */
	fill_exec(ev, bprm, &f, s, cgid);
	judge_exec(&ev->hdr, s, &f);
	ev->hdr.verdict = VERDICT_LSM_DENIED;
	bpf_ringbuf_submit(ev, 0);
	return -EPERM;
}

/*
 * Whether a socket of a family other than inet and inet6 needs raw_sockets
 * in the intent. idend judges unix sockets by path when they connect or
 * send (cgroup connect_unix, sendmsg_unix), and netlink sockets reach only
 * the local kernel; for both, SOCK_RAW is another name for SOCK_DGRAM
 * (unix_create turns one into the other, netlink treats them alike), so
 * their type says nothing. Every other family reaches a network, a device
 * or the hypervisor by a path no idend hook judges: packet (AF_PACKET),
 * vsock, CAN, Bluetooth, XDP, RDS, TIPC, SMC ... Refusing them here also
 * keeps a session from loading their modules: __sock_create asks the LSMs
 * before it requests "net-pf-N".
 */
static __always_inline bool family_needs_raw(int family)
{
	return family != AF_UNIX && family != AF_NETLINK;
}

/*
 * socket(2) and socketpair(2) of the families the cgroup hooks never see:
 * cgroup/sock_create runs from inet_create and inet6_create only (all
 * kernels), and no cgroup connect hook sees vsock. This hook runs from
 * __sock_create, before the family's create function, for every family;
 * inet and inet6 are left to cgroup/sock_create (net.bpf.c), which judges
 * them by type and protocol, so that each socket gets one judgement and at
 * most one record. type has no SOCK_NONBLOCK or SOCK_CLOEXEC bits here.
 * A task under idend's root in no session may create no socket at all,
 * unix and netlink included, as cgroup/sock_create refuses it every inet
 * socket.
 *
 * Sockets the kernel creates for itself (kern != 0, such as the netlink and
 * ICMP sockets of a new network namespace, created in the context of the
 * task that asked for the namespace) are never refused: they do what the
 * kernel does, not what the task asks.
 *
 * A refusal is recorded as EVENT_SOCKET with verdict DENY, as
 * cgroup/sock_create records it: socket() fails with EPERM either way, and
 * one verdict keeps escalation and replay alike for both hooks.
 * (LSM_DENIED tells a refused execve from one killed at the tracepoint;
 * a socket has no second outcome to tell apart.)
 */
SEC("lsm/socket_create")
int BPF_PROG(socket_create, int family, int type, int protocol, int kern, int ret)
{
	struct net_event ev = {};
	struct session *s;
	bool under_root, raw, in;
	__u64 cgid;

	if (ret)
		return ret;
	if (kern || family == AF_INET || family == AF_INET6)
		return 0;
	s = current_session(&cgid, &under_root);
	if (!s && !under_root)
		return 0;

	raw = family_needs_raw(family);
	in = s && (!raw || (s->flags & SESSION_RAW_OK));
	/* As for inet sockets: an ordinary socket is judged when it connects
	 * or sends, not recorded at creation. */
	if (in && !raw)
		return 0;

	fill_header(&ev.hdr, EVENT_SOCKET, s, cgid);
	ev.family = family;
	ev.type = type;
	ev.protocol = protocol;
	in = decide(&ev.hdr, s, in);
	emit(&ev.hdr, sizeof(ev));
	return in ? 0 : -EPERM;
}
