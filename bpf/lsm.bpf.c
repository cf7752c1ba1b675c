// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Exec enforcement with BPF-LSM: an exec whose file is outside a restricted
 * session's allow list fails with EPERM, and the calling program goes on
 * running, as it would after any refused execve. Loaded only when BPF-LSM
 * is active (CONFIG_BPF_LSM and "bpf" in the lsm= boot list); elsewhere the
 * exec tracepoint kills the forbidden exec instead. The judgement is the
 * tracepoint's (exec.h): an exec refused here never reaches the tracepoint,
 * and one allowed here is recorded there, so that every exec has exactly
 * one record.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "maps.h"
#include "file.h"
#include "exec.h"

#define EPERM 1

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
