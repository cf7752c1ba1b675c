/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * How an exec is judged, shared by the exec tracepoint (exec.bpf.c) and the
 * BPF-LSM hook (lsm.bpf.c), so that both reach the same verdict on the same
 * exec: the session is found from the task's cgroup, and the file the
 * kernel is about to run (bprm->file) is looked up by (device, inode) in
 * the session's allow list. Include after maps.h and file.h.
 */
#ifndef __IDEND_EXEC_H__
#define __IDEND_EXEC_H__

/* Set before load: cgroup id and level of idend's root. A task below the
 * root in no session is denied everything, exec included. */
const volatile __u64 root_cgroup_id = 0;
const volatile __u32 root_level = 0;

/* The identity of the file an exec runs. */
struct exec_file {
	__u64 dev; /* the superblock's kernel dev_t: major << 20 | minor */
	__u64 ino;
	__u32 nlink; /* 0: a deleted file or a memfd */
};

/* The session of the current task. Sets *under_root for a task in a cgroup
 * below idend's root, so that a missing session means "deny". */
static __always_inline struct session *current_session(__u64 *cgid, bool *under_root)
{
	*cgid = bpf_get_current_cgroup_id();
	*under_root = root_cgroup_id &&
		      bpf_get_current_ancestor_cgroup_id(root_level) == root_cgroup_id;
	return bpf_map_lookup_elem(&sessions_map, cgid);
}

/*
 * The file that runs. For a #! script the kernel has replaced bprm->file
 * with the interpreter by the time either hook runs, and for
 * `ld.so /usr/bin/x` it is ld.so: what is judged is what gets mapped and
 * executed, never a name the caller chose.
 */
static __always_inline void exec_file_of(struct linux_binprm *bprm, struct exec_file *f)
{
	struct inode *inode = BPF_CORE_READ(bprm, file, f_inode);

	f->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	f->ino = BPF_CORE_READ(inode, i_ino);
	f->nlink = BPF_CORE_READ(inode, __i_nlink);
}

/* Whether the session's intent allows running f. A file with no link
 * (memfd_create, a deleted file) is never on an allow list, whatever inode
 * number it had: that inode number can be reused. */
static __always_inline bool exec_allowed(const struct session *s, const struct exec_file *f)
{
	struct exec_key key = {};

	if (!s)
		return false;
	if (s->flags & SESSION_EXEC_ANY)
		return true;
	if (f->nlink == 0)
		return false;
	key.policy = s->policy;
	key.dev = f->dev;
	key.ino = f->ino;
	return bpf_map_lookup_elem(&exec_rules_map, &key) != NULL;
}

/* Sets the exec record's verdict and returns whether the exec may go on:
 * in the intent, or outside it in a session of mode audit. */
static __always_inline bool judge_exec(struct event_header *h, const struct session *s,
				       const struct exec_file *f)
{
	return decide(h, s, exec_allowed(s, f));
}

/* judge_exec for when there is no record to fill: its ring is full. */
static __always_inline bool exec_passes(const struct session *s, const struct exec_file *f)
{
	struct event_header h = {};

	return judge_exec(&h, s, f);
}

/*
 * Fills an exec record but for argv and the verdict: the process and its
 * parent, the file (device, inode, links, path as resolved from its
 * dentry) and the filename as passed to execve.
 */
static __always_inline void fill_exec(struct exec_event *ev, struct linux_binprm *bprm,
				      const struct exec_file *f, const struct session *s,
				      __u64 cgid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	__builtin_memset(&ev->hdr, 0, sizeof(ev->hdr));
	fill_header(&ev->hdr, EVENT_EXEC, s, cgid);
	ev->parent_start_ns = BPF_CORE_READ(task, real_parent, group_leader, start_boottime);
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->dev = f->dev;
	ev->ino = f->ino;
	ev->nlink = f->nlink;
	ev->argv_len = 0;
	if (f->nlink == 0)
		ev->hdr.flags |= EVENT_F_DELETED;
	bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), BPF_CORE_READ(bprm, filename));
	ev->path_len = file_path(ev->path, BPF_CORE_READ(bprm, file), &ev->hdr.flags);
}

#endif /* __IDEND_EXEC_H__ */
