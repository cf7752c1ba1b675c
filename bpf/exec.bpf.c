// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Process tracking and exec enforcement. Execs, forks and exits of tasks in
 * sessions become records; an exec whose file is outside a restricted
 * session's allow list is stopped with SIGKILL at sched_process_exec, after
 * the point of no return and before the new program runs an instruction of
 * its own. Where BPF-LSM is available, lsm.bpf.c refuses the exec earlier
 * with EPERM and the forbidden exec never gets here; the kill stays as the
 * backstop for an exec that passed the LSM hook under a policy narrowed
 * since, or while the LSM program is not attached.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "maps.h"
#include "file.h"
#include "exec.h"

#define SIGKILL 9

char LICENSE[] SEC("license") = "Dual BSD/GPL";

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
	struct exec_event *ev;
	struct exec_file f;
	struct session *s;
	bool under_root;
	__u64 cgid;

	s = current_session(&cgid, &under_root);
	if (!s && !under_root)
		return 0;
	exec_file_of(bprm, &f);

	ev = bpf_ringbuf_reserve(&denials_ring, sizeof(*ev), 0);
	if (!ev) {
		count_loss(RING_DENIALS, EVENT_EXEC);
		/* A forbidden program must not run unrecorded either. */
		if (!exec_passes(s, &f))
			bpf_send_signal(SIGKILL);
		return 0;
	}
	fill_exec(ev, bprm, &f, s, cgid);
	read_argv(ev, task);
	if (!judge_exec(&ev->hdr, s, &f)) {
		bpf_send_signal(SIGKILL);
		ev->hdr.verdict = VERDICT_KILLED;
	}

	/* Reserved in the denials ring to be sure of space for a kill; an
	 * allowed exec moves to the events ring when it fits there. */
	if (ring_for(&ev->hdr) == RING_EVENTS &&
	    bpf_ringbuf_output(&events_ring, ev, sizeof(*ev), events_wakeup(sizeof(*ev))) == 0) {
		/* A discarded record needs no reader woken. */
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
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
