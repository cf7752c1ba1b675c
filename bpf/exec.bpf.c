// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Process tracking and exec enforcement. Execs, forks and exits of tasks in
 * sessions become records; an exec whose file is outside a restricted
 * session's allow list is stopped with SIGKILL at sched_process_exec, after
 * the point of no return and before the new program runs an instruction of
 * its own. Where BPF-LSM is available, lsm.bpf.c refuses the exec earlier
 * with EPERM, and the kill here stays as the backstop.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "maps.h"
#include "file.h"

#define SIGKILL 9

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set before load: cgroup id and level of idend's root. A task below the
 * root in no session is denied everything, exec included. */
const volatile __u64 root_cgroup_id = 0;
const volatile __u32 root_level = 0;

/* Set before load when lsm.bpf.c enforces exec: the tracepoint then only
 * records, unless the LSM program was detached. */
const volatile bool lsm_enforces = false;

/* The session of the current task. Sets *under_root for a task in a cgroup
 * below idend's root, so that a missing session means "deny". */
static __always_inline struct session *current_session(__u64 *cgid, bool *under_root)
{
	*cgid = bpf_get_current_cgroup_id();
	*under_root = root_cgroup_id &&
		      bpf_get_current_ancestor_cgroup_id(root_level) == root_cgroup_id;
	return bpf_map_lookup_elem(&sessions_map, cgid);
}

static __always_inline bool exec_allowed(const struct session *s, const struct exec_event *ev)
{
	struct exec_key key = {};

	if (s->flags & SESSION_EXEC_ANY)
		return true;
	if (ev->hdr.flags & EVENT_F_DELETED)
		return false;
	key.policy = s->policy;
	key.dev = ev->dev;
	key.ino = ev->ino;
	return bpf_map_lookup_elem(&exec_rules_map, &key) != NULL;
}

static __always_inline void read_argv(struct exec_event *ev, struct task_struct *task)
{
	unsigned long start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long end = BPF_CORE_READ(task, mm, arg_end);
	__u64 len = end - start;

	if (end <= start)
		return;
	if (len > ARGV_MAX) {
		len = ARGV_MAX;
		ev->hdr.flags |= EVENT_F_ARGV_TRUNCATED;
	}
	barrier_var(len);
	if (len > ARGV_MAX)
		return;
	if (bpf_probe_read_user(ev->argv, len, (void *)start) == 0)
		ev->argv_len = len;
}

SEC("raw_tracepoint/sched_process_exec")
int sched_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
	struct file *file = BPF_CORE_READ(bprm, file);
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	struct exec_event *ev;
	struct session *s;
	bool under_root, in;
	__u64 cgid;

	s = current_session(&cgid, &under_root);
	if (!s && !under_root)
		return 0;

	ev = bpf_ringbuf_reserve(&denials_ring, sizeof(*ev), 0);
	if (!ev) {
		count_loss(RING_DENIALS, EVENT_EXEC);
		/* A forbidden program must not run unrecorded either. */
		if (!lsm_enforces && (!s || !(s->flags & SESSION_EXEC_ANY)))
			bpf_send_signal(SIGKILL);
		return 0;
	}
	__builtin_memset(&ev->hdr, 0, sizeof(ev->hdr));
	fill_header(&ev->hdr, EVENT_EXEC, s, cgid);
	ev->parent_start_ns = BPF_CORE_READ(task, real_parent, group_leader, start_boottime);
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	ev->ino = BPF_CORE_READ(inode, i_ino);
	ev->nlink = BPF_CORE_READ(inode, __i_nlink);
	ev->argv_len = 0;
	if (ev->nlink == 0)
		ev->hdr.flags |= EVENT_F_DELETED;
	bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), BPF_CORE_READ(bprm, filename));
	read_argv(ev, task);
	ev->path_len = file_path(ev->path, file, &ev->hdr.flags);

	in = s && exec_allowed(s, ev);
	in = decide(&ev->hdr, s, in);
	if (!in && !lsm_enforces) {
		bpf_send_signal(SIGKILL);
		ev->hdr.verdict = VERDICT_KILLED;
	}

	/* Reserved in the denials ring to be sure of space for a kill; an
	 * allowed exec moves to the events ring when it fits there. */
	if (ring_for(&ev->hdr) == RING_EVENTS &&
	    bpf_ringbuf_output(&events_ring, ev, sizeof(*ev), 0) == 0) {
		bpf_ringbuf_discard(ev, 0);
		return 0;
	}
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

SEC("raw_tracepoint/sched_process_fork")
int sched_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	struct fork_event ev = {};
	struct session *s;
	bool under_root;
	__u64 cgid;

	s = current_session(&cgid, &under_root);
	if (!s)
		return 0;
	fill_header(&ev.hdr, EVENT_FORK, s, cgid);
	ev.hdr.verdict = VERDICT_ALLOW;
	ev.child_pid = BPF_CORE_READ(child, tgid);
	ev.child_tid = BPF_CORE_READ(child, pid);
	ev.child_start_ns = BPF_CORE_READ(child, group_leader, start_boottime);
	if (ev.child_pid != ev.child_tid)
		return 0; /* a new thread: same process key, nothing to track */
	emit(&ev.hdr, sizeof(ev));
	return 0;
}

SEC("raw_tracepoint/sched_process_exit")
int sched_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	struct exit_event ev = {};
	struct session *s;
	bool under_root;
	__u64 cgid;
	int code;

	s = current_session(&cgid, &under_root);
	if (!s)
		return 0;
	/* One record per process: when its last thread exits. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	fill_header(&ev.hdr, EVENT_EXIT, s, cgid);
	ev.hdr.verdict = VERDICT_ALLOW;
	code = BPF_CORE_READ(task, signal, group_exit_code);
	if (!code)
		code = BPF_CORE_READ(task, exit_code);
	ev.exit_code = code;
	emit(&ev.hdr, sizeof(ev));
	return 0;
}
