// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Local socket enforcement: connect() and sendmsg() to unix socket paths.
 * The cgroup unix hooks exist from Linux 6.7 (commit 859051dd165e); on
 * older kernels this object is not loaded and `idend doctor` says that
 * local sockets are not enforced.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

extern void *bpf_cast_to_kern_ctx(void *) __ksym;
extern void *bpf_rdonly_cast(const void *, __u32) __ksym;

/* Socket paths a policy allows. Abstract names are kept as the kernel sees
 * them: a leading NUL, which user space writes as "@". */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct unix_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} unix_rules_map SEC(".maps");

/* A unix_event does not fit the stack next to the key; one per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unix_event);
} unix_scratch SEC(".maps");

static __always_inline int judge_unix(struct bpf_sock_addr *ctx, __u16 kind)
{
	struct bpf_sock_addr_kern *sa = bpf_cast_to_kern_ctx(ctx);
	__u64 cgid = bpf_get_current_cgroup_id();
	struct session *s = bpf_map_lookup_elem(&sessions_map, &cgid);
	struct sockaddr_un *un;
	struct unix_event *ev;
	__u32 zero = 0, len;
	bool in;

	ev = bpf_map_lookup_elem(&unix_scratch, &zero);
	if (!ev)
		return 0;
	__builtin_memset(ev, 0, sizeof(*ev));
	fill_header(&ev->hdr, kind, s, cgid);

	un = bpf_rdonly_cast(sa->uaddr, bpf_core_type_id_kernel(struct sockaddr_un));
	len = sa->uaddrlen;
	len = len > sizeof(un->sun_family) ? len - sizeof(un->sun_family) : 0;
	if (len > UNIX_PATH_MAX)
		len = UNIX_PATH_MAX;
	ev->path_len = len;
	bpf_probe_read_kernel(ev->path, len & 127, un->sun_path);
	/* A pathname ends at its first NUL, whatever the caller counted in
	 * the length: the bytes after it are not part of the name the kernel
	 * looks up, so they are cleared before the lookup. An abstract name
	 * (leading NUL) is every byte of the length; one holding another NUL
	 * cannot be written in an intent and is outside it. */
	bool odd = false;
	for (int i = 1; i < UNIX_PATH_MAX; i++) {
		if (ev->path[0] != '\0') {
			if (ev->path[i] == '\0' && ev->path_len > i)
				ev->path_len = i;
			if (i >= ev->path_len)
				ev->path[i] = '\0';
		} else if (i < ev->path_len && ev->path[i] == '\0') {
			odd = true;
		}
	}

	in = false;
	if (s && !odd) {
		struct unix_key k = { .policy = s->policy };

		__builtin_memcpy(k.path, ev->path, UNIX_PATH_MAX);
		in = bpf_map_lookup_elem(&unix_rules_map, &k) != NULL;
	}
	in = decide(&ev->hdr, s, in);
	emit(&ev->hdr, sizeof(*ev));
	return in ? 1 : 0;
}

SEC("cgroup/connect_unix")
int connect_unix(struct bpf_sock_addr *ctx)
{
	return judge_unix(ctx, EVENT_UNIX_CONNECT);
}

SEC("cgroup/sendmsg_unix")
int sendmsg_unix(struct bpf_sock_addr *ctx)
{
	return judge_unix(ctx, EVENT_UNIX_SENDMSG);
}
