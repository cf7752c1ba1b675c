// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Network enforcement. The programs attach once, to idend's cgroup root,
 * with BPF_F_ALLOW_MULTI; they run for every task in a session cgroup below
 * it and find the task's session from its cgroup id. A task under the root
 * that is in no session is denied everything.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOCK_RAW 3
#define IPPROTO_IP 0
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_MPTCP 262

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* A policy's rules: an LPM trie per policy in a hash of maps, so that a
 * policy's whole rule set is created, filled and dropped as one object.
 * Inner maps must match this template's max_entries (LPM tries do not take
 * BPF_F_INNER_MAP), so it is the hard ceiling; a trie allocates nodes only
 * as rules are added, and the daemon enforces the configured, smaller,
 * per-session limit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
		__uint(max_entries, MAX_SESSION_PREFIXES);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__type(key, struct v4_key);
		__type(value, struct port_rules);
	});
} v4_rules_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
		__uint(max_entries, MAX_SESSION_PREFIXES);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__type(key, struct v6_key);
		__type(value, struct port_rules);
	});
} v6_rules_map SEC(".maps");

static __always_inline bool ports_allow(const struct port_rules *r, __u16 port, __u8 proto)
{
	__u32 n = r->count;

	for (int i = 0; i < MAX_PORT_RULES; i++) {
		if (i >= n)
			break;
		const struct port_rule *pr = &r->rules[i];
		if (pr->proto && pr->proto != proto)
			continue;
		if (port >= pr->lo && port <= pr->hi)
			return true;
	}
	return false;
}

static __always_inline bool v4_allowed(const struct session *s, const __u8 addr[4],
				       __u16 port, __u8 proto)
{
	struct v4_key key = { .prefixlen = 32 };
	struct port_rules *r;
	void *trie;

	trie = bpf_map_lookup_elem(&v4_rules_map, &s->policy);
	if (!trie)
		return false;
	__builtin_memcpy(key.addr, addr, 4);
	r = bpf_map_lookup_elem(trie, &key);
	return r && ports_allow(r, port, proto);
}

static __always_inline bool v6_allowed(const struct session *s, const __u8 addr[16],
				       __u16 port, __u8 proto)
{
	struct v6_key key = { .prefixlen = 128 };
	struct port_rules *r;
	void *trie;

	trie = bpf_map_lookup_elem(&v6_rules_map, &s->policy);
	if (!trie)
		return false;
	__builtin_memcpy(key.addr, addr, 16);
	r = bpf_map_lookup_elem(trie, &key);
	return r && ports_allow(r, port, proto);
}

/* The transport a rule's protocol field is compared with. MPTCP connects
 * are TCP as far as an intent is concerned. */
static __always_inline __u8 transport(__u32 type)
{
	return type == SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP;
}

static __always_inline int judge4(struct bpf_sock_addr *ctx, __u16 kind)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	struct session *s = bpf_map_lookup_elem(&sessions_map, &cgid);
	struct net_event ev = {};
	__u32 ip = ctx->user_ip4;
	bool in;

	fill_header(&ev.hdr, kind, s, cgid);
	__builtin_memcpy(ev.addr, &ip, 4);
	ev.port = bpf_ntohs(ctx->user_port);
	ev.family = AF_INET;
	ev.type = ctx->type;
	ev.protocol = transport(ctx->type);

	in = s && v4_allowed(s, ev.addr, ev.port, ev.protocol);
	in = decide(&ev.hdr, s, in);
	emit(&ev.hdr, sizeof(ev));
	return in ? 1 : 0;
}

static __always_inline int judge6(struct bpf_sock_addr *ctx, __u16 kind)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	struct session *s = bpf_map_lookup_elem(&sessions_map, &cgid);
	struct net_event ev = {};
	__u32 ip[4];
	bool in;

	fill_header(&ev.hdr, kind, s, cgid);
	ip[0] = ctx->user_ip6[0];
	ip[1] = ctx->user_ip6[1];
	ip[2] = ctx->user_ip6[2];
	ip[3] = ctx->user_ip6[3];
	ev.port = bpf_ntohs(ctx->user_port);
	ev.type = ctx->type;
	ev.protocol = transport(ctx->type);

	/* ::ffff:a.b.c.d reaches an IPv4 peer through an IPv6 socket; the
	 * connect4 hook never sees it, so it is judged here by the IPv4
	 * rules. */
	if (ip[0] == 0 && ip[1] == 0 && ip[2] == bpf_htonl(0x0000ffff)) {
		__builtin_memcpy(ev.addr, &ip[3], 4);
		ev.family = AF_INET;
		ev.hdr.flags |= EVENT_F_V4_MAPPED;
		in = s && v4_allowed(s, ev.addr, ev.port, ev.protocol);
	} else {
		__builtin_memcpy(ev.addr, ip, 16);
		ev.family = AF_INET6;
		in = s && v6_allowed(s, ev.addr, ev.port, ev.protocol);
	}
	in = decide(&ev.hdr, s, in);
	emit(&ev.hdr, sizeof(ev));
	return in ? 1 : 0;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return judge4(ctx, EVENT_CONNECT);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return judge6(ctx, EVENT_CONNECT);
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return judge4(ctx, EVENT_SENDMSG);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return judge6(ctx, EVENT_SENDMSG);
}

/* Whether a new socket needs raw_sockets in the intent: raw sockets of any
 * family, packet sockets, and inet sockets of a protocol the connect and
 * sendmsg hooks do not judge (ICMP echo sockets, SCTP, ...). */
static __always_inline bool needs_raw(__u32 family, __u32 type, __u32 protocol)
{
	if (type == SOCK_RAW || family == AF_PACKET)
		return true;
	if (family != AF_INET && family != AF_INET6)
		return false;
	switch (protocol) {
	case IPPROTO_IP:
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_MPTCP:
		return type != SOCK_STREAM && type != SOCK_DGRAM;
	default:
		return true;
	}
}

SEC("cgroup/sock_create")
int sock_create(struct bpf_sock *sk)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	struct session *s = bpf_map_lookup_elem(&sessions_map, &cgid);
	struct net_event ev = {};
	bool raw, in;

	ev.family = sk->family;
	ev.type = sk->type;
	ev.protocol = sk->protocol;
	raw = needs_raw(ev.family, ev.type, ev.protocol);
	in = s && (!raw || (s->flags & SESSION_RAW_OK));

	/* Ordinary sockets are judged when they connect or send; recording
	 * every socket() would only add noise. */
	if (in && !raw)
		return 1;

	fill_header(&ev.hdr, EVENT_SOCKET, s, cgid);
	in = decide(&ev.hdr, s, in);
	emit(&ev.hdr, sizeof(ev));
	return in ? 1 : 0;
}

/* Types exported to Go that no program here names in full: a pointer of
 * each makes clang emit their BTF, which bpf2go needs for -type. */
struct session *unused_session __attribute__((unused));
struct event_header *unused_event_header __attribute__((unused));
struct net_event *unused_net_event __attribute__((unused));
struct port_rule *unused_port_rule __attribute__((unused));
struct port_rules *unused_port_rules __attribute__((unused));
struct v4_key *unused_v4_key __attribute__((unused));
struct v6_key *unused_v6_key __attribute__((unused));
struct unix_key *unused_unix_key __attribute__((unused));
struct exec_key *unused_exec_key __attribute__((unused));
struct unix_event *unused_unix_event __attribute__((unused));
struct exec_event *unused_exec_event __attribute__((unused));
struct fork_event *unused_fork_event __attribute__((unused));
struct exit_event *unused_exit_event __attribute__((unused));
enum idend_event_kind unused_kind __attribute__((unused));
enum idend_verdict unused_verdict __attribute__((unused));
enum idend_event_flag unused_event_flag __attribute__((unused));
enum idend_mode unused_mode __attribute__((unused));
enum idend_session_flag unused_session_flag __attribute__((unused));
enum idend_ring unused_ring __attribute__((unused));
