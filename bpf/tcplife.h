/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one contract between the kernel program and user space.
 * otel_tcplife/abi.py mirrors these types; tests/unit/test_abi.py checks the
 * mirror against the BTF of the compiled object. Change both together.
 */
#ifndef __TCPLIFE_H
#define __TCPLIFE_H

#define TASK_COMM_LEN 16
#define MAX_PORTS 16

/* How the event's pid/comm were found (best first). */
enum owner {
	OWNER_NONE = 0,     /* current task at CLOSE, as the classic tool does */
	OWNER_CONNECT = 1,  /* task that called connect() (SYN_SENT) */
	OWNER_ACCEPT = 2,   /* task that accepted the connection */
	OWNER_CLOSE = 3,    /* task that called close()/shutdown() (FIN_WAIT1 / LAST_ACK) */
	OWNER_HOLDER = 4,   /* a process holding the socket, found at an agent's start (iterators) */
};

enum role {
	ROLE_UNKNOWN = 0,   /* first seen ESTABLISHED (opened before tracing started) */
	ROLE_CLIENT = 1,    /* active open: SYN_SENT seen */
	ROLE_SERVER = 2,    /* passive open: SYN_RECV seen */
};

/* Who closed first: sent the first FIN, or else the reset that ended the session. */
enum closer {
	CLOSED_BY_NONE = 0,   /* neither (a timeout, a connect that failed without a reset) */
	CLOSED_BY_LOCAL = 1,
	CLOSED_BY_PEER = 2,
};

/* The first reset of the session, if any. */
enum reset {
	RESET_NONE = 0,
	RESET_SENT = 1,
	RESET_RECEIVED = 2,
};

/* struct event's flags. */
enum event_flags {
	/* Found established by the socket iterator at an agent's start: its birth, the handshake
	 * and the owner's connect()/accept() happened before tracing; birth_ns is when it was found. */
	EVENT_START_UNKNOWN = 1,
};

/* Indexes of the per-CPU `counters` array. */
enum counter {
	COUNTER_LOST = 0,       /* ring buffer full: a closed session was not reported */
	COUNTER_UNTRACKED = 1,  /* socket table full: a session's birth was not recorded */
	NR_COUNTERS = 2,
};

/*
 * The session's span: its trace id, span id and parent span id, each u64 stored as its
 * little-endian bytes, which are the id's bytes on the wire. Derived from the connection's ISN
 * pair when both are known, so both ends' agents give the same trace (see trace_ids.py);
 * random otherwise.
 */
struct span_ids {
	__u64 trace_id[2];
	__u64 span_id;
	__u64 parent_span_id;  /* a server span's with derived ids: the client span's id; else 0 */
};

/* One closed TCP session. */
struct event {
	__u64 birth_ns;   /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) at the first state */
	__u64 close_ns;   /* bpf_ktime_get_ns() at the transition to CLOSE */
	__u64 tx_bytes;   /* payload bytes acked by the peer (SYN/FIN removed) */
	__u64 rx_bytes;   /* payload bytes received (FIN removed) */
	__u8 saddr[16];   /* local address; IPv4 uses the first 4 bytes */
	__u8 daddr[16];   /* remote address */
	__u32 pid;        /* host tgid of the owning process */
	__s32 error;      /* sk_err at close (ECONNREFUSED, ETIMEDOUT, ...), 0 if none */
	__u16 sport;      /* local port, host order */
	__u16 dport;      /* remote port, host order */
	__u8 family;      /* 4 or 6; IPv4-mapped IPv6 is reported as 4 */
	__u8 role;        /* enum role */
	__u8 oldstate;    /* TCP state before CLOSE */
	__u8 owner;       /* enum owner */
	char comm[TASK_COMM_LEN];
	__u32 srtt_us;      /* smoothed RTT at close, us (0: no RTT sample) */
	__u32 rtt_min_us;   /* minimum RTT seen, us (0: no RTT sample) */
	__u32 retransmits;  /* segments retransmitted (tcp_sock.total_retrans) */
	__u8 closed_by;     /* enum closer */
	__u8 reset;         /* enum reset */
	__u8 flags;         /* EVENT_* bits */
	__u8 reserved;      /* zero: pads the event to 8 bytes */
	__u64 cgroup_id;    /* the owner's cgroup v2 id, taken with pid and comm (0: unknown) */
	__u64 start_ns;     /* the owner's start, boot-time ns: tells it from a later process of the same pid */
	struct span_ids span_ids;
};

/*
 * The reader's place in the ring buffer, kept in the pinned `agent_state` map so that a restarted
 * agent knows it (see otel_tcplife/probe/pins.py). Written by user space only. Sequence numbers
 * count the events read from this ring buffer since its pins were made.
 */
struct pin_state {
	__u64 commit_pos;   /* the consumer position last committed (written just before it)... */
	__u64 commit_seq;   /* ...and the sequence number of the event there */
	__u64 handed_seq;   /* events before this one were, or were being, made durable in an output */
	__u64 starts;       /* agents started on these pins */
	__u64 lost_seen;    /* the counters' values an agent last reported: a restarted agent */
	__u64 untracked_seen;  /* reports only what grew since (e.g. while no agent ran) */
};

/* Settings written into .rodata before load. Zero means "off" for filters. */
struct probe_config {
	__u32 pid;
	__u32 family;                /* 0, 4 or 6 */
	__u16 sports[MAX_PORTS];     /* local ports, zero-terminated */
	__u16 dports[MAX_PORTS];     /* remote ports, zero-terminated */
	/* Wake the reader only once this many bytes wait in the ring buffer (0: on
	 * every event); the reader also polls on a timer, so latency stays bounded. */
	__u32 wakeup_bytes;
	__u32 random_trace_ids;      /* 1: random ids for every session, never derived from the ISNs */
};

#endif /* __TCPLIFE_H */
