/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The path of an open file, rebuilt from its dentry and mount chain, for
 * programs that cannot call bpf_d_path (tracepoints). The path is relative
 * to the global root, whatever root or mount namespace the task sees. The
 * walk runs under bpf_loop (Linux 5.17), so its depth does not multiply the
 * verifier's work.
 */
#ifndef __IDEND_FILE_H__
#define __IDEND_FILE_H__

#define NAME_MAX 255
#define MAX_PATH_DEPTH 1024

/* The walk writes backwards into a per-CPU buffer with room for one name
 * past its end, so that the verifier can prove every write in bounds. */
struct path_buf {
	char buf[EXEC_PATH_MAX + NAME_MAX + 1];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_buf);
} path_scratch SEC(".maps");

struct path_walk {
	struct dentry *d;
	struct mount *mnt;
	__u32 off;
	__u32 truncated;
};

static __always_inline struct mount *real_mount(struct vfsmount *vmnt)
{
	return (struct mount *)((void *)vmnt - bpf_core_field_offset(struct mount, mnt));
}

/* Writes the name of d in front of what the walk has written. Returns 1
 * when it does not fit. */
static __always_inline long put_name(struct path_walk *w, struct dentry *d)
{
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	__u32 zero = 0, len = BPF_CORE_READ(d, d_name.len), off = w->off;
	struct path_buf *pb = bpf_map_lookup_elem(&path_scratch, &zero);

	if (!pb)
		return 1;
	if (len > NAME_MAX || len + 1 > off) {
		w->truncated = 1;
		return 1;
	}
	off -= len;
	bpf_probe_read_kernel(&pb->buf[off & (EXEC_PATH_MAX - 1)], len & NAME_MAX, name);
	off -= 1;
	pb->buf[off & (EXEC_PATH_MAX - 1)] = '/';
	w->off = off;
	return 0;
}

/* One step up: a path component, or a mount crossing. Returns 1 to stop. */
static long path_step(__u32 i, void *arg)
{
	struct path_walk *w = arg;
	/* Locals, so that CO-RE relocates kernel types only. */
	struct dentry *d = w->d;
	struct mount *mnt = w->mnt;
	struct dentry *root = BPF_CORE_READ(mnt, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);

	if (d != root && d == parent) {
		/* A file in no directory (memfd, other pseudo files made by
		 * alloc_file_pseudo): its name is the whole path, as d_path
		 * writes it. */
		put_name(w, d);
		return 1;
	}
	if (d == root) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (up == mnt)
			return 1;
		w->d = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		return 0;
	}
	if (put_name(w, d))
		return 1;
	w->d = parent;
	return 0;
}

/*
 * Writes the path of file so that it ends at out[EXEC_PATH_MAX] and returns
 * its length: the path is the last bytes of out, not terminated. Sets
 * EVENT_F_PATH_TRUNCATED when it does not fit or is deeper than
 * MAX_PATH_DEPTH components and mounts.
 */
static __always_inline __u32 file_path(char *out, struct file *file, __u32 *flags)
{
	struct path_walk w = {
		.d = BPF_CORE_READ(file, f_path.dentry),
		.mnt = real_mount(BPF_CORE_READ(file, f_path.mnt)),
		.off = EXEC_PATH_MAX,
	};
	struct path_buf *pb;
	__u32 zero = 0;
	long n;

	n = bpf_loop(MAX_PATH_DEPTH, path_step, &w, 0);
	if (w.truncated || n >= MAX_PATH_DEPTH)
		*flags |= EVENT_F_PATH_TRUNCATED;
	pb = bpf_map_lookup_elem(&path_scratch, &zero);
	if (!pb)
		return 0;
	if (w.off >= EXEC_PATH_MAX) {
		w.off = EXEC_PATH_MAX - 1;
		pb->buf[EXEC_PATH_MAX - 1] = '/';
	}
	bpf_probe_read_kernel(out, EXEC_PATH_MAX, pb->buf);
	return EXEC_PATH_MAX - w.off;
}

#endif /* __IDEND_FILE_H__ */
