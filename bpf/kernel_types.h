/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types the probe reads, declared by hand for CO-RE.
 * Only names and types matter: libbpf relocates every access against the
 * running kernel's BTF, so layouts here need not match any kernel.
 * (Replaces a generated vmlinux.h: the build needs no kernel BTF.)
 */
#ifndef __KERNEL_TYPES_H
#define __KERNEL_TYPES_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};

enum {
	BPF_F_NO_PREALLOC = 1,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	__u8 s6_addr[16];
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	unsigned long skc_flags;   /* sk_flags */
};

struct sock {
	struct sock_common __sk_common;
	int sk_err;
	__u16 sk_protocol;
};

struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

struct inet_connection_sock {
	struct inet_sock icsk_inet;
};

struct minmax_sample {
	__u32 t;
	__u32 v;
};

struct minmax {
	struct minmax_sample s[3];
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u32 rcv_nxt;
	__u32 snd_una;
	__u32 write_seq;
	__u64 bytes_received;
	__u64 bytes_acked;
	__u32 srtt_us;          /* smoothed RTT << 3, in us */
	struct minmax rtt_min;  /* windowed minimum RTT: s[0].v, in us */
	__u32 total_retrans;
};

struct socket {
	struct sock *sk;
};

struct file {
	void *private_data;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	struct files_struct *files;
	struct task_struct *group_leader;
	__u64 start_boottime;
};

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_inet_sock_set_state {
	struct trace_entry ent;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
};

#pragma clang attribute pop

enum sock_flags {
	SOCK_DEAD = 0,
	SOCK_DONE = 1,
};

/* tcp:tcp_send_reset record (format: skbaddr at 8, skaddr at 16; the same since the event came). */
struct tcp_send_reset_ctx {
	struct trace_entry ent;
	const void *skbaddr;
	const void *skaddr;
};

/* tcp:tcp_receive_reset record (format: skaddr at 8). */
struct tcp_receive_reset_ctx {
	struct trace_entry ent;
	const void *skaddr;
};

/* syscalls:sys_exit_* tracepoint record (format: __syscall_nr at 8, ret at 16). */
struct syscall_exit_ctx {
	struct trace_entry ent;
	int nr;
	long ret;
};

#endif /* __KERNEL_TYPES_H */
