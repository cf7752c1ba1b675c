/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps shared by every idend object. Each is pinned by name under the
 * daemon's bpffs directory, so that enforcement outlives the daemon and a
 * restarted daemon finds the same state. The objects that include this
 * header are loaded with the first one's maps as replacements.
 */
#ifndef __IDEND_MAPS_H__
#define __IDEND_MAPS_H__

#include "idend.h"

/* Sessions, keyed by the cgroup id of the session's cgroup. A hash map:
 * cgroup ids are sparse 64-bit inode numbers. Replacing a value is atomic
 * for readers (the kernel swaps whole elements), which is what makes a
 * policy switch atomic: the daemon fills a new policy, then repoints the
 * session at it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct session);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sessions_map SEC(".maps");

/* Executables a policy allows, as (device, inode) of the file the kernel
 * runs. Present means allowed; the value is unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct exec_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} exec_rules_map SEC(".maps");

/* Allowed and tracking events. Pinned: while no daemon runs, the kernel
 * keeps writing here and the next daemon drains what fits. 8 MiB holds
 * about 80,000 connect records: 0.8 s of a flood of 100,000 a second,
 * against a reader that polls every 10 ms. A reader maps a ring's data
 * twice, so this counts twice in the daemon's resident set. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events_ring SEC(".maps");

/* Denied and outside-the-intent events only. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} denials_ring SEC(".maps");

/* Records that found their ring full, indexed by
 * ring * EVENT_KIND_MAX + kind. Per-CPU so that counting never contends. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RING_MAX * EVENT_KIND_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} losses_map SEC(".maps");

static __always_inline void count_loss(__u32 ring, __u32 kind)
{
	__u32 idx = ring * EVENT_KIND_MAX + kind;
	__u64 *n = bpf_map_lookup_elem(&losses_map, &idx);

	if (n)
		*n += 1;
}

static __always_inline bool denial_verdict(__u8 verdict, __u32 flags)
{
	return verdict != VERDICT_ALLOW || (flags & EVENT_F_OUTSIDE);
}

/* Which ring an event goes to, from its verdict. */
static __always_inline __u32 ring_for(const struct event_header *h)
{
	return denial_verdict(h->verdict, h->flags) ? RING_DENIALS : RING_EVENTS;
}

/* The events ring wakes its reader when a record of size takes the unread
 * bytes past this mark, and not otherwise; the reader also polls it. A
 * wakeup per record costs the recording task more than the program itself
 * (an IRQ work item each). Denials always wake the reader at once. */
#define WAKEUP_BYTES (64 << 10)

static __always_inline __u64 events_wakeup(__u64 size)
{
	__u64 unread = bpf_ringbuf_query(&events_ring, BPF_RB_AVAIL_DATA);

	return unread < WAKEUP_BYTES && unread + size >= WAKEUP_BYTES ?
		       BPF_RB_FORCE_WAKEUP :
		       BPF_RB_NO_WAKEUP;
}

/* Copies a small event into its ring, counting it when the ring is full. */
static __always_inline void emit(struct event_header *h, __u64 size)
{
	__u32 ring = ring_for(h);
	long err;

	if (ring == RING_DENIALS)
		err = bpf_ringbuf_output(&denials_ring, h, size, 0);
	else
		err = bpf_ringbuf_output(&events_ring, h, size, events_wakeup(size));
	if (err)
		count_loss(ring, h->kind);
}

static __always_inline void fill_header(struct event_header *h, __u16 kind,
					const struct session *s, __u64 cgid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	h->ktime_ns = bpf_ktime_get_ns();
	h->session = s ? s->id : 0;
	h->cgroup_id = cgid;
	h->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->uid = (__u32)uid_gid;
	h->gid = uid_gid >> 32;
	h->kind = kind;
	if (!s)
		h->flags |= EVENT_F_NO_SESSION;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* Sets the verdict of an action, given whether the intent covers it, and
 * returns whether the kernel lets it through. */
static __always_inline bool decide(struct event_header *h, const struct session *s,
				   bool in_intent)
{
	if (in_intent) {
		h->verdict = VERDICT_ALLOW;
		return true;
	}
	h->flags |= EVENT_F_OUTSIDE;
	if (s && s->mode == MODE_AUDIT) {
		h->verdict = VERDICT_AUDIT;
		return true;
	}
	h->verdict = VERDICT_DENY;
	return false;
}

#endif /* __IDEND_MAPS_H__ */
