/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types shared by idend's BPF programs and the daemon. bpf2go exports each
 * struct and enum below to Go (-type), so this header is the only place the
 * layout is written down. Every struct is padded by hand to a multiple of 8
 * bytes so that the Go and C layouts agree without compiler help.
 */
#ifndef __IDEND_H__
#define __IDEND_H__

/* Bump when a map's key or value layout changes: a daemon that finds pinned
 * state of another layout replaces it instead of reading it. */
#define IDEND_LAYOUT_VERSION 1

#define MAX_PORT_RULES 16
#define MAX_SESSION_PREFIXES (1 << 20)
#define UNIX_PATH_MAX 108
#define COMM_LEN 16
#define FILENAME_LEN 256
#define EXEC_PATH_MAX 4096
#define ARGV_MAX 1024

/* What a session's intent says about actions outside it. */
enum idend_mode {
	MODE_BLOCK = 0,    /* deny in the kernel */
	MODE_ESCALATE = 1, /* deny, and the daemon raises an escalation */
	MODE_AUDIT = 2,    /* allow, record as outside the intent */
};

enum idend_session_flag {
	SESSION_EXEC_ANY = 1 << 0, /* no executable allow list */
	SESSION_RAW_OK = 1 << 1,   /* raw, packet and non-TCP/UDP inet sockets */
};

/* Value of sessions_map, keyed by the cgroup id of the session's cgroup. */
struct session {
	__u64 id;     /* the daemon's session number */
	__u32 policy; /* key of this session's rules in the *_rules maps */
	__u32 flags;  /* enum idend_session_flag */
	__u32 mode;   /* enum idend_mode */
	__u32 _pad;
};

enum idend_event_kind {
	EVENT_CONNECT = 1,
	EVENT_SENDMSG = 2,
	EVENT_SOCKET = 3,
	EVENT_UNIX_CONNECT = 4,
	EVENT_UNIX_SENDMSG = 5,
	EVENT_EXEC = 6,
	EVENT_FORK = 7,
	EVENT_EXIT = 8,
	EVENT_KIND_MAX = 9,
};

enum idend_verdict {
	VERDICT_ALLOW = 1,
	VERDICT_DENY = 2,   /* the call failed with EPERM */
	VERDICT_AUDIT = 3,  /* allowed, outside the intent (mode audit) */
	VERDICT_KILLED = 4, /* exec stopped with SIGKILL at the tracepoint */
	VERDICT_LSM_DENIED = 5, /* exec refused with EPERM by BPF-LSM */
};

enum idend_event_flag {
	EVENT_F_NO_SESSION = 1 << 0,     /* task under idend's root, in no session */
	EVENT_F_V4_MAPPED = 1 << 1,      /* IPv6 destination ::ffff:a.b.c.d */
	EVENT_F_OUTSIDE = 1 << 2,        /* outside the intent */
	EVENT_F_PATH_TRUNCATED = 1 << 3, /* path longer than the record holds */
	EVENT_F_ARGV_TRUNCATED = 1 << 4,
	EVENT_F_DELETED = 1 << 5, /* executed file has no link (deleted, memfd) */
	EVENT_F_THREAD = 1 << 6,  /* fork: a new thread, not a process */
};

/* Rings. Denials get their own, so that a flood of allowed traffic cannot
 * cost the records of what was denied. */
enum idend_ring {
	RING_EVENTS = 0,
	RING_DENIALS = 1,
	RING_MAX = 2,
};

struct event_header {
	__u64 ktime_ns;    /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 session;     /* session id, 0 when the task is in no session */
	__u64 cgroup_id;
	__u64 start_ns;    /* thread group leader's start_boottime */
	__u32 pid;         /* thread group id */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u16 kind;        /* enum idend_event_kind */
	__u8 verdict;      /* enum idend_verdict */
	__u8 _pad;
	__u32 flags;       /* enum idend_event_flag */
	char comm[COMM_LEN];
};

/* connect, sendmsg and socket creation. */
struct net_event {
	struct event_header hdr;
	__u8 addr[16]; /* IPv4 in the first four bytes */
	__u16 port;    /* host byte order */
	__u16 family;  /* AF_INET, AF_INET6 (after v4-mapped: AF_INET) */
	__u16 protocol;
	__u16 type;    /* SOCK_STREAM, SOCK_DGRAM, SOCK_RAW ... */
};

struct unix_event {
	struct event_header hdr;
	__u32 path_len;
	__u32 _pad;
	char path[UNIX_PATH_MAX];
	__u32 _pad2;
};

struct exec_event {
	struct event_header hdr;
	__u64 parent_start_ns;
	__u64 dev; /* kernel dev_t: major << 20 | minor */
	__u64 ino;
	__u32 ppid;
	__u32 nlink;
	__u32 path_len;  /* bytes used in path, without the NUL */
	__u32 argv_len;  /* bytes used in argv, NUL-separated */
	char filename[FILENAME_LEN]; /* as passed to execve */
	char argv[ARGV_MAX];
	char path[EXEC_PATH_MAX]; /* resolved from the executed file's dentry */
};

struct fork_event {
	struct event_header hdr; /* the parent */
	__u64 child_start_ns;
	__u32 child_pid;
	__u32 child_tid;
};

struct exit_event {
	struct event_header hdr;
	__u32 exit_code; /* wait status: code << 8 | signal */
	__u32 _pad;
};

struct port_rule {
	__u16 lo;
	__u16 hi;
	__u8 proto; /* 0 any, IPPROTO_TCP, IPPROTO_UDP */
	__u8 _pad[3];
};

/* Value of a network rule: the ports allowed at one prefix. The compiler
 * in user space merges every shorter prefix's ports into each longer one,
 * so the longest match alone decides. */
struct port_rules {
	__u32 count;
	struct port_rule rules[MAX_PORT_RULES];
};

struct v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct unix_key {
	__u32 policy;
	char path[UNIX_PATH_MAX];
};

struct exec_key {
	__u32 policy;
	__u32 _pad;
	__u64 dev;
	__u64 ino;
};

#endif /* __IDEND_H__ */
