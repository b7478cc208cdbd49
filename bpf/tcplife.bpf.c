// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Trace TCP session lifespans: one `struct event` per session that reaches
 * CLOSE, with its owner process, payload byte counts, birth/close times and
 * what happened on the wire (RTT, retransmits, resets, who closed first).
 *
 * Only tracepoints are used (sock:inet_sock_set_state, in its tp_btf form or
 * the classic tracepoint form, syscalls:sys_exit_accept{,4} and
 * tcp:tcp_{send,receive}_reset): kprobes and fentry are not available
 * everywhere this runs.
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "tcplife.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define E2BIG 7

/* TCP states (include/net/tcp_states.h); a stable kernel ABI. */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT = 2,
	TCP_SYN_RECV = 3,
	TCP_FIN_WAIT1 = 4,
	TCP_FIN_WAIT2 = 5,
	TCP_TIME_WAIT = 6,
	TCP_CLOSE = 7,
	TCP_CLOSE_WAIT = 8,
	TCP_LAST_ACK = 9,
	TCP_LISTEN = 10,
	TCP_CLOSING = 11,
};
#define STATE(s) (1u << (s))

const volatile struct probe_config config = {};

/* What we remember about a live socket, keyed by its address. */
struct sock_info {
	__u64 birth_ns;
	__u32 pid;
	__u32 states;   /* STATE() bit of every state entered */
	__u8 owner;     /* enum owner */
	__u8 reset;     /* enum reset: the first one seen by the reset tracepoints */
	__u8 flags;     /* EVENT_* bits, copied into the event */
	char comm[TASK_COMM_LEN];
	__u64 cgroup_id;  /* the owner's, taken with pid and comm */
	__u64 start_ns;   /* the owner's start (boot-time ns), against pid reuse */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sock_info);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/*
 * The reader's place in `events`, pinned with it (struct pin_state); only user space uses it.
 * The bcc backend pins nothing: it defines TCPLIFE_NO_PINS, and its generator drops the map.
 */
#ifndef TCPLIFE_NO_PINS
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pin_state);
} agent_state SEC(".maps");
#endif /* TCPLIFE_NO_PINS */

/*
 * Local ports of listening sockets, filled by the socket iterator before it meets the others.
 * Only the iterators use it (see TCPLIFE_NO_ITER below).
 */
#ifndef TCPLIFE_NO_ITER
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} listen_ports SEC(".maps");
#endif /* TCPLIFE_NO_ITER */

/*
 * A field of a kernel object. tp_btf hands the program a socket pointer whose type the
 * verifier knows, so its fields are plain loads; the classic tracepoint hands it a bare
 * address, so each field is a bpf_probe_read_kernel() call. `direct` is a constant in each
 * program (every function here is inlined): each program keeps one kind of access.
 */
#define FIELD(direct, ptr, path) ((direct) ? (ptr)->path : BPF_CORE_READ(ptr, path))

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);

	if (value)
		*value += 1;
}

static __always_inline void take_current_task(struct sock_info *info, __u8 owner)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	info->pid = bpf_get_current_pid_tgid() >> 32;
	info->owner = owner;
	bpf_get_current_comm(info->comm, sizeof(info->comm));
	/* What only the live process can tell: user space resolves the rest (identity.py), even
	 * once the process is gone. */
	info->cgroup_id = bpf_get_current_cgroup_id();
	info->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
}

static __always_inline bool port_allowed(const volatile __u16 *ports, __u16 port)
{
	if (ports[0] == 0)
		return true;
	for (int i = 0; i < MAX_PORTS; i++) {
		if (ports[i] == 0)
			return false;
		if (ports[i] == port)
			return true;
	}
	return false;
}

static __always_inline bool is_v4_mapped(const __u8 *a)
{
	return !(a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7] | a[8] | a[9]) &&
	       a[10] == 0xff && a[11] == 0xff;
}

/* Fill addresses and family; false if the family is neither IPv4 nor IPv6. */
static __always_inline bool read_addresses(struct sock *sk, struct event *e, bool direct)
{
	__u16 family = FIELD(direct, sk, __sk_common.skc_family);

	if (family == AF_INET) {
		e->family = 4;
		if (direct) {
			*(__u32 *)e->saddr = sk->__sk_common.skc_rcv_saddr;
			*(__u32 *)e->daddr = sk->__sk_common.skc_daddr;
		} else {
			bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
			bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
		}
		/* Reserved space holds older records: user space keys caches by all 16 bytes. */
		__builtin_memset(e->saddr + 4, 0, 12);
		__builtin_memset(e->daddr + 4, 0, 12);
		return true;
	}
	if (family != AF_INET6)
		return false;
	if (direct) {
		__builtin_memcpy(e->saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(e->daddr, &sk->__sk_common.skc_v6_daddr, 16);
	} else {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	if (is_v4_mapped(e->daddr)) {
		/* ::ffff:a.b.c.d is an IPv4 session: report it as one. */
		e->family = 4;
		__builtin_memmove(e->saddr, e->saddr + 12, 4);
		__builtin_memmove(e->daddr, e->daddr + 12, 4);
		__builtin_memset(e->saddr + 4, 0, 12);
		__builtin_memset(e->daddr + 4, 0, 12);
	} else {
		e->family = 6;
	}
	return true;
}

/*
 * tcp_sock counts sequence space: remove the SYN and FIN bytes to get payload.
 * - our SYN is in bytes_acked when we opened actively and reached ESTABLISHED;
 * - our FIN was queued iff we entered FIN_WAIT1 or LAST_ACK, and is acked
 *   when snd_una has reached write_seq (which counts the FIN);
 * - the peer's FIN is in bytes_received iff tcp_fin() ran, which sets
 *   SOCK_DONE (a reset does not).
 */
static __always_inline void read_payload_bytes(struct tcp_sock *tp, __u32 states, __u64 sk_flags,
					       struct event *e, bool direct)
{
	__u64 acked = FIELD(direct, tp, bytes_acked);
	__u64 received = FIELD(direct, tp, bytes_received);

	if ((states & STATE(TCP_SYN_SENT)) && (states & STATE(TCP_ESTABLISHED)) && acked)
		acked--;
	if ((states & (STATE(TCP_FIN_WAIT1) | STATE(TCP_LAST_ACK))) && acked &&
	    FIELD(direct, tp, snd_una) == FIELD(direct, tp, write_seq))
		acked--;
	if ((sk_flags & (1ULL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && received)
		received--;
	e->tx_bytes = acked;
	e->rx_bytes = received;
}

/* Smoothed and minimum RTT (us) and retransmitted segments, as TCP_INFO reports them. */
static __always_inline void read_wire_facts(struct tcp_sock *tp, struct event *e, bool direct)
{
	__u32 rtt_min = 0;

	e->srtt_us = FIELD(direct, tp, srtt_us) >> 3;
	if (bpf_core_field_exists(tp->rtt_min)) {
		rtt_min = FIELD(direct, tp, rtt_min.s[0].v);
		if (rtt_min == ~0U)  /* no sample yet (minmax_reset to ~0U) */
			rtt_min = 0;
	}
	e->rtt_min_us = rtt_min;
	e->retransmits = FIELD(direct, tp, total_retrans);
}

/*
 * The session's reset. The reset tracepoints see those sent before CLOSE (timeouts, tcp_abort)
 * and every one received. tcp_close() and tcp_disconnect() (close() with SO_LINGER 0 or unread
 * data, a listener closed with unaccepted connections) set CLOSE first and send their reset
 * right after: a CLOSE from a state where the peer still expects data, with no reset received
 * and no error (a timeout sets sk_err first), is one of theirs. From FIN_WAIT2 the usual CLOSE
 * is TIME_WAIT's, after the peer's FIN (SOCK_DONE) or for an orphan (SOCK_DEAD).
 */
static __always_inline __u8 session_reset(struct sock_info *info, int oldstate, __u64 sk_flags, int sk_err)
{
	__u64 done_or_dead = (1ULL << bpf_core_enum_value(enum sock_flags, SOCK_DONE)) |
			     (1ULL << bpf_core_enum_value(enum sock_flags, SOCK_DEAD));

	if (info->reset)
		return info->reset;
	if (sk_err)
		return RESET_NONE;
	if (STATE(oldstate) & (STATE(TCP_ESTABLISHED) | STATE(TCP_SYN_RECV) | STATE(TCP_CLOSE_WAIT) |
			       STATE(TCP_FIN_WAIT1)))
		return RESET_SENT;
	if (oldstate == TCP_FIN_WAIT2 && !(sk_flags & done_or_dead))
		return RESET_SENT;
	return RESET_NONE;
}

/* Who closed first: the side that sent the first FIN (we did if we entered FIN_WAIT1, the peer
 * did if we entered CLOSE_WAIT, which LAST_ACK follows), else the side that sent the reset. */
static __always_inline __u8 closed_by(__u32 states, __u8 reset)
{
	if (states & STATE(TCP_FIN_WAIT1))
		return CLOSED_BY_LOCAL;
	if (states & (STATE(TCP_CLOSE_WAIT) | STATE(TCP_LAST_ACK)))
		return CLOSED_BY_PEER;
	return reset == RESET_SENT ? CLOSED_BY_LOCAL : reset == RESET_RECEIVED ? CLOSED_BY_PEER : CLOSED_BY_NONE;
}

/*
 * SipHash-2-4 of one 8-byte message under a 128-bit key (Aumasson and Bernstein's reference,
 * for a message of exactly one block). trace_ids.py holds the same function and keys: both
 * must give the same ids.
 */
#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                      \
	do {                                                                          \
		v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);         \
		v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                             \
		v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                             \
		v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);         \
	} while (0)

static __always_inline __u64 siphash_u64(__u64 k0, __u64 k1, __u64 m)
{
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
	__u64 last = 8ULL << 56;  /* the final block: the message's length, no bytes left */

	v3 ^= m; SIPROUND; SIPROUND; v0 ^= m;
	v3 ^= last; SIPROUND; SIPROUND; v0 ^= last;
	v2 ^= 0xff; SIPROUND; SIPROUND; SIPROUND; SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* The keys: fixed, public and the same on every host (they separate the four uses, not secrets). */
#define IDS_KEY 0x6f74656c2d746370ULL  /* "otel-tcp" */
enum { KEY_TRACE_HIGH = 1, KEY_TRACE_LOW = 2, KEY_CLIENT_SPAN = 3, KEY_SERVER_SPAN = 4 };

/*
 * The ISNs, from fields every supported kernel has. The local ISN is snd_una less the sequence
 * space acked (bytes_acked counts our SYN after an active open; a passive open starts at
 * snd_una = ISN + 1); the peer's is rcv_nxt less bytes_received (its FIN included) and its SYN.
 * Only after a handshake this socket saw: then both are known.
 */
static __always_inline void fill_span_ids(struct tcp_sock *tp, __u32 states, __u8 role, struct event *e,
					  bool direct)
{
	__u32 local_isn, peer_isn;
	__u64 pair, span;

	if (config.random_trace_ids || role == ROLE_UNKNOWN || !(states & STATE(TCP_ESTABLISHED))) {
		e->span_ids.trace_id[0] = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
		e->span_ids.trace_id[1] = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
		e->span_ids.span_id = (((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32()) ?: 1;
		e->span_ids.parent_span_id = 0;
		return;
	}
	local_isn = FIELD(direct, tp, snd_una) - (__u32)FIELD(direct, tp, bytes_acked) - (role == ROLE_SERVER);
	peer_isn = FIELD(direct, tp, rcv_nxt) - (__u32)FIELD(direct, tp, bytes_received) - 1;
	/* The message: the client's ISN, then the server's (little-endian u32 each). */
	pair = role == ROLE_CLIENT ? ((__u64)peer_isn << 32 | local_isn) : ((__u64)local_isn << 32 | peer_isn);
	e->span_ids.trace_id[0] = siphash_u64(IDS_KEY, KEY_TRACE_HIGH, pair);
	e->span_ids.trace_id[1] = siphash_u64(IDS_KEY, KEY_TRACE_LOW, pair);
	span = siphash_u64(IDS_KEY, KEY_CLIENT_SPAN, pair) ?: 1;
	if (role == ROLE_CLIENT) {
		e->span_ids.span_id = span;
		e->span_ids.parent_span_id = 0;
	} else {
		e->span_ids.span_id = siphash_u64(IDS_KEY, KEY_SERVER_SPAN, pair) ?: 1;
		e->span_ids.parent_span_id = span;
	}
}

static __always_inline void report_close(struct sock *sk, __u64 key, struct sock_info *info,
					 int oldstate, bool direct)
{
	/* A typed tcp_sock pointer for direct loads: a plain cast keeps the type struct sock. */
	struct tcp_sock *tp = direct ? bpf_skc_to_tcp_sock(sk) : (struct tcp_sock *)sk;
	struct event *e;
	__u64 flags, sk_flags;
	__u16 sport, dport;
	__u32 pid = info->pid;
	__u32 states = info->states | STATE(oldstate);

	if (!tp)  /* never here: only full TCP sockets change state; the verifier wants the check */
		return;
	if (!pid)
		take_current_task(info, OWNER_NONE);
	if (config.pid && info->pid != config.pid)
		return;
	/* At CLOSE skc_num is already zero: the local port is in inet_sport. */
	sport = __builtin_bswap16(FIELD(direct, tp, inet_conn.icsk_inet.inet_sport));
	dport = __builtin_bswap16(FIELD(direct, sk, __sk_common.skc_dport));
	if (!port_allowed(config.sports, sport) || !port_allowed(config.dports, dport))
		return;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_LOST);
		return;
	}
	if (!read_addresses(sk, e, direct) || (config.family && e->family != config.family)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return;
	}
	e->birth_ns = info->birth_ns;
	e->close_ns = bpf_ktime_get_ns();
	sk_flags = FIELD(direct, sk, __sk_common.skc_flags);
	read_payload_bytes(tp, states, sk_flags, e, direct);
	read_wire_facts(tp, e, direct);
	e->pid = info->pid;
	e->error = FIELD(direct, sk, sk_err);
	e->reset = session_reset(info, oldstate, sk_flags, e->error);
	e->closed_by = closed_by(states, e->reset);
	e->flags = info->flags;
	e->reserved = 0;
	e->sport = sport;
	e->dport = dport;
	e->role = (info->states & STATE(TCP_SYN_SENT)) ? ROLE_CLIENT :
		  (info->states & STATE(TCP_SYN_RECV)) ? ROLE_SERVER : ROLE_UNKNOWN;
	e->oldstate = oldstate;
	e->owner = info->owner;
	fill_span_ids(tp, states, e->role, e, direct);
	__builtin_memcpy(e->comm, info->comm, sizeof(e->comm));
	e->cgroup_id = info->cgroup_id;
	e->start_ns = info->start_ns;
	/* Fewer wakeups, fewer context switches: the reader polls on a timer. */
	if (!config.wakeup_bytes)
		flags = 0;  /* the kernel's default: wake a reader that has caught up */
	else if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) < config.wakeup_bytes)
		flags = BPF_RB_NO_WAKEUP;
	else
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

static __always_inline int handle_set_state(struct sock *sk, int oldstate, int newstate, bool direct)
{
	__u64 key = (__u64)sk;
	struct sock_info *info;

	if (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV) {
		/* A new connection: its first state. Replaces any stale entry. */
		struct sock_info fresh = {
			.birth_ns = bpf_ktime_get_ns(),
			.states = STATE(newstate),
		};
		/* connect() runs in the connecting task; SYN_RECV runs in softirq. */
		if (newstate == TCP_SYN_SENT)
			take_current_task(&fresh, OWNER_CONNECT);
		if (bpf_map_update_elem(&socks, &key, &fresh, BPF_ANY))
			count(COUNTER_UNTRACKED);
		return 0;
	}

	/* Only these states tell us something (payload byte counts, owner, the
	 * close); skipping the lookup for the others is 1 lookup in 5. */
	if (!(STATE(newstate) & (STATE(TCP_ESTABLISHED) | STATE(TCP_FIN_WAIT1) |
				 STATE(TCP_LAST_ACK) | STATE(TCP_CLOSE))))
		return 0;
	info = bpf_map_lookup_elem(&socks, &key);
	if (!info) {
		if (newstate == TCP_ESTABLISHED) {
			/* Handshake began before tracing started. */
			struct sock_info late = {
				.birth_ns = bpf_ktime_get_ns(),
				.states = STATE(newstate),
			};
			if (bpf_map_update_elem(&socks, &key, &late, BPF_NOEXIST))
				count(COUNTER_UNTRACKED);
		}
		return 0;
	}
	if (newstate != TCP_CLOSE) {
		info->states |= STATE(newstate);
		/* close()/shutdown() run in the owning task: the best we have
		 * when connect() or accept() were not seen. */
		if ((newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK) && !info->pid)
			take_current_task(info, OWNER_CLOSE);
		return 0;
	}
	report_close(sk, key, info, oldstate, direct);
	bpf_map_delete_elem(&socks, &key);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(set_state_btf, struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ_BITFIELD(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return handle_set_state(sk, oldstate, newstate, true);
}

SEC("tracepoint/sock/inet_sock_set_state")
int set_state_tracepoint(struct trace_event_raw_inet_sock_set_state *args)
{
	if (args->protocol != IPPROTO_TCP)
		return 0;
	return handle_set_state((struct sock *)args->skaddr, args->oldstate, args->newstate, false);
}

/* accept() returns in the accepting task: that task owns the session. */
static __always_inline int handle_accept(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file;
	struct socket *sock;
	struct sock_info *info;
	__u64 key;

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	key = (__u64)BPF_CORE_READ(sock, sk);
	info = bpf_map_lookup_elem(&socks, &key);
	if (info)
		take_current_task(info, OWNER_ACCEPT);
	return 0;
}

/* The first reset of a tracked session, sent or received: kept until its CLOSE. */
static __always_inline int mark_reset(const void *skaddr, __u8 reset)
{
	__u64 key = (__u64)skaddr;
	struct sock_info *info = bpf_map_lookup_elem(&socks, &key);

	if (info && !info->reset)
		info->reset = reset;
	return 0;
}

/* Classic tracepoints in every attach mode: they only need the socket's address, the key. */
SEC("tracepoint/tcp/tcp_send_reset")
int tcp_send_reset(struct tcp_send_reset_ctx *ctx)
{
	return mark_reset(ctx->skaddr, RESET_SENT);
}

SEC("tracepoint/tcp/tcp_receive_reset")
int tcp_receive_reset(struct tcp_receive_reset_ctx *ctx)
{
	return mark_reset(ctx->skaddr, RESET_RECEIVED);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sys_exit_accept4(struct syscall_exit_ctx *ctx)
{
	return handle_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sys_exit_accept(struct syscall_exit_ctx *ctx)
{
	return handle_accept(ctx->ret);
}

/*
 * Sessions open before tracing: run once by the agent at start (user space reads each iterator
 * to its end), after the tracepoints are attached. The bcc backend has no iterators: it defines
 * TCPLIFE_NO_ITER, and its generator drops these programs, their types and `listen_ports`.
 */
#ifndef TCPLIFE_NO_ITER
#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)
struct bpf_iter_meta {
	void *seq;
};

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
};

struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
};

/* Fields of kernel structs only the iterators read (CO-RE ignores the ___iter suffix). */
struct sock_common___iter {
	unsigned char skc_state;
	__u16 skc_num;
};

struct kernfs_node___iter {
	__u64 id;
};

struct cgroup___iter {
	struct kernfs_node___iter *kn;
};

struct css_set___iter {
	struct cgroup___iter *dfl_cgrp;
};

struct task_struct___iter {
	int tgid;
	char comm[TASK_COMM_LEN];
	struct css_set___iter *cgroups;
	struct task_struct *group_leader;
};
#pragma clang attribute pop

/*
 * iter/tcp: every TCP socket, listening ones first (the kernel walks the listening hash before
 * the established one), so a socket's role is known from its local port when it comes.
 *
 * A socket in a state that has a session (SYN_SENT, ESTABLISHED and the closing states) enters
 * the table with BPF_NOEXIST, as started at an unknown time: one the tracepoints already track
 * (seen from its handshake, or by an earlier agent through the pins) keeps its entry, whoever
 * comes first. Races: the kernel runs this program with the socket locked (lock_sock_fast) and
 * skips it once unhashed, so its state cannot move meanwhile. A socket that closes before the
 * walk reaches it is not in the walk; one that closes after its entry is made is reported by
 * the CLOSE tracepoint (attached before the walk), which deletes the entry; one that does a
 * handshake meanwhile gets its entry from SYN_SENT/SYN_RECV, which the walk then leaves alone
 * (a SYN_RECV child is hashed only after its SYN_RECV tracepoint). So each session is in the
 * table once, and reported once.
 */
SEC("iter/tcp")
int find_sockets(struct bpf_iter__tcp *ctx)
{
	struct sock_common *sk_common = ctx->sk_common;
	struct sock_common___iter *skc = (void *)sk_common;
	struct sock_info found = {};
	__u8 one = 1;
	__u64 key;
	__u32 port;
	int state;

	if (!sk_common || !bpf_skc_to_tcp_sock(sk_common))  /* request and time-wait sockets */
		return 0;
	state = BPF_CORE_READ(skc, skc_state);
	port = BPF_CORE_READ(skc, skc_num);
	if (state == TCP_LISTEN) {
		bpf_map_update_elem(&listen_ports, &port, &one, BPF_ANY);
		return 0;
	}
	switch (state) {
	case TCP_SYN_SENT:
		found.states = STATE(TCP_SYN_SENT);
		break;
	case TCP_ESTABLISHED:
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_CLOSING:
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
		/* The states it went through that the byte counts depend on (read_payload_bytes). */
		found.states = STATE(TCP_ESTABLISHED) | STATE(state);
		if (state == TCP_FIN_WAIT2 || state == TCP_CLOSING)
			found.states |= STATE(TCP_FIN_WAIT1);
		if (state == TCP_LAST_ACK)
			found.states |= STATE(TCP_CLOSE_WAIT);
		found.states |= bpf_map_lookup_elem(&listen_ports, &port) ? STATE(TCP_SYN_RECV) : STATE(TCP_SYN_SENT);
		break;
	default:
		return 0;
	}
	found.birth_ns = bpf_ktime_get_ns();
	found.flags = EVENT_START_UNKNOWN;
	key = (__u64)skc;
	if (bpf_map_update_elem(&socks, &key, &found, BPF_NOEXIST) == -E2BIG)
		count(COUNTER_UNTRACKED);
	return 0;
}

/*
 * iter/task_file: every open file of every process; a socket found by find_sockets gets the
 * first process seen holding it as its owner (skipped once it has one, e.g. from a close()).
 */
SEC("iter/task_file")
int find_owners(struct bpf_iter__task_file *ctx)
{
	struct task_struct___iter *task = (void *)ctx->task;
	struct file *file = ctx->file;
	struct sock_info *info;
	struct socket *sock;
	__u64 key;

	if (!task || !file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	key = (__u64)BPF_CORE_READ(sock, sk);
	info = bpf_map_lookup_elem(&socks, &key);
	if (!info || !(info->flags & EVENT_START_UNKNOWN) || info->pid)
		return 0;
	info->pid = BPF_CORE_READ(task, tgid);
	info->owner = OWNER_HOLDER;
	BPF_CORE_READ_STR_INTO(&info->comm, task, comm);
	info->cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	info->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	return 0;
}
#endif /* TCPLIFE_NO_ITER */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Puts struct event into the object's BTF, where tests check the Python mirror. */
struct event *unused_event __attribute__((unused));
