// SPDX-License-Identifier: GPL-2.0-only
/* sslsniff's kernel side: probes on TLS functions record what each call moved into a
 * ring buffer. It must load on every kernel from 5.10: where a kernel lacks a feature
 * (task storage, probe cookies, bpf_loop), user space picks the programs and rodata
 * that do without it (src/kernel/features.rs); the rest of the code is the same. */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <asm/unistd.h>
#include <linux/in6.h>
#include "sslsniff.h"

/* Filters and limits, fixed before load so filtered traffic costs one compare. */
const volatile __u32 targ_pid = 0;
const volatile __u32 targ_uid = (__u32)-1;
const volatile bool filter_comm = false;
const volatile char targ_comm[TASK_COMM_LEN] = {};
const volatile __u64 max_capture = 1 << 20;
/* Payload bytes per record: a power of two up to MAX_CHUNK_SIZE, at most a quarter of the
 * ring (user space sets it), so that a small ring still holds several records. Larger
 * records were tried: 64 KiB records saved the reader a fifth of its CPU, but a probe
 * preempted while copying one holds every record behind it from the reader, and the
 * 1 MiB JSON run lost calls in a third of its runs. */
const volatile __u32 chunk_size = MAX_CHUNK_SIZE;
/* Above this much unread data the consumer is woken; below it, it drains on a timer. */
const volatile __u64 wakeup_watermark = 0;
const volatile struct func_info funcs[MAX_FUNCS] = {};
const volatile struct go_fd_path go_fd_paths[MAX_GO_FD_PATHS] = {};
/* Connection tracking is on: Go probes read the socket through the receiver, and C
 * probes tie objects fed through memory to their socket (conn.bpf.h). */
const volatile bool track_conn = false;
/* Only the threads of this cgroup and its descendants are traced (--cgroup): the
 * cgroup is the one entry of cgroup_filter. */
const volatile bool filter_cgroup = false;
/* Handshakes are probed (--handshake). */
const volatile bool trace_handshakes = false;
/* The kernel has task storage (5.11): without it, `calls` and `handshakes` are hashes
 * keyed by thread id (user space retypes them before load). The verifier drops the
 * branch not taken, so an old kernel never sees the helpers it lacks. */
const volatile bool use_task_storage = true;
/* The kernel has probe cookies (5.15): without them each function has its own program
 * (the fixed ones below), and Go programs' layouts come from `go_layouts`. */
const volatile bool use_cookies = true;
/* Read by user space: what the bounded loop of kernels without bpf_loop sends at most. */
const volatile __u32 bounded_chunks = MAX_BOUNDED_CHUNKS;
/* Set by user space at exit: on kernels without multi-uprobe links the probes are
 * closed in the background, slowly; until then they must cost no more than the trap. */
volatile bool stopped = false;
/* Set by user space, on kernels without cookies, before it attaches a file of a library
 * whose objects may be tied but whose free it cannot probe there: the programs cannot
 * tell that file's calls from the library's other files', so from then on no call
 * learns a tie (conn.bpf.h). */
volatile bool ties_unsafe = false;

/* NSPR's PRIOMethods.file_type for a layered descriptor: the SSL layer sits on one,
 * plain files and sockets do not. */
#define PR_DESC_LAYERED 4

/* The socket a thread's last call used (conn.bpf.h): kept across its calls. */
struct last_socket {
	__u64 file;
	__u64 ino;
	struct conn conn;
};

struct call {
	__u64 buf;
	__u64 out;
	__u64 tls_conn;
	__u64 ts_ns;
	struct conn conn;
	struct last_socket last;
	__u32 active; /* a call is in flight; cleared on every return path */
	__u32 func;   /* the function's index, for returns that have no cookie to tell */
	/* Connection tracking of objects fed through memory (conn.bpf.h): the socket read
	 * just before the call, and whether its object may be tied at all. */
	__u64 read_sk;
	__s32 read_fd;
	__u32 ties;
	/* Kernels without bpf_loop: the header of the call's records, for send_slot_chunk. */
	struct event_hdr hdr;
};

/* Per-thread state lives with the thread (task storage): the kernel frees it when the
 * thread exits, so threads that die inside a call cannot fill anything, and a live call
 * can never be evicted the way an LRU hash evicts under pressure. It is also much
 * cheaper than hashing: update, lookup and delete were a third of a probe's cost.
 * Handshakes nest around reads and writes in some libraries: their own slot keeps the
 * two from overwriting each other. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct call);
} calls SEC(".maps"), handshakes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stats);
} counters SEC(".maps");

/* The cgroup of --cgroup, put in by user space before any probe is attached. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_filter SEC(".maps");

/* Sized by user space before load (--ring-buffer-size). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 20);
} events SEC(".maps");

static __always_inline struct stats *stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&counters, &zero);
}

/* Per-CPU, but atomic: a preempted probe can race another task's probe on the CPU. */
#define COUNT(field, n)                                                            \
	do {                                                                       \
		struct stats *s = stats();                                         \
		if (s)                                                             \
			__sync_fetch_and_add(&s->field, n);                        \
	} while (0)

/* The current thread's slot in `map` (calls, handshakes, aead_calls), created from
 * `empty` if asked. */
static __always_inline void *thread_slot(void *map, const void *empty, bool create)
{
	__u32 tid;
	void *slot;

	if (use_task_storage)
		return bpf_task_storage_get(map, bpf_get_current_task_btf(), 0,
					    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	tid = (__u32)bpf_get_current_pid_tgid();
	slot = bpf_map_lookup_elem(map, &tid);
	if (slot || !create)
		return slot;
	if (bpf_map_update_elem(map, &tid, empty, BPF_NOEXIST)) {
		COUNT(untracked_calls, 1);
		return 0;
	}
	return bpf_map_lookup_elem(map, &tid);
}

static __always_inline struct call *call_slot(void *map, bool create)
{
	static const struct call empty;

	return thread_slot(map, &empty, create);
}

/* The call is over: task storage keeps the slot for the thread's next call; a hash
 * gives it back, so that it holds only threads inside a call. */
static __always_inline void end_call(void *map, struct call *c)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	c->active = 0;
	if (!use_task_storage)
		bpf_map_delete_elem(map, &tid);
}

#include "kstructs.bpf.h"
#include "conn.bpf.h"

static __always_inline bool comm_matches(void)
{
	char comm[TASK_COMM_LEN];

	if (!filter_comm)
		return true;
	bpf_get_current_comm(comm, sizeof(comm));
	for (int i = 0; i < TASK_COMM_LEN; i++) {
		if (comm[i] != targ_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

static __always_inline bool wanted(__u64 pid_tgid)
{
	if (stopped)
		return false;
	if (targ_pid && (pid_tgid >> 32) != targ_pid)
		return false;
	if (targ_uid != (__u32)-1 && (__u32)bpf_get_current_uid_gid() != targ_uid)
		return false;
	if (filter_cgroup && bpf_current_task_under_cgroup(&cgroup_filter, 0) != 1)
		return false;
	return comm_matches();
}

/* A probe's cookie, or `fixed` in the programs made for kernels without cookies (the
 * branch not taken is dropped by the verifier). */
static __always_inline __u64 cookie(void *ctx, __u64 fixed)
{
	return use_cookies ? bpf_get_attach_cookie(ctx) : fixed;
}

/* The table entry of function `id`, or null. */
static __always_inline const volatile struct func_info *func_at(__u64 id)
{
	const volatile struct func_info *f;

	if (id >= MAX_FUNCS)
		return 0;
	/* The mask keeps clang from indexing before the check (MAX_FUNCS is a power of 2). */
	f = &funcs[id & (MAX_FUNCS - 1)];
	/* Opaque to clang: it would otherwise fold the caller's null test into the range
	 * test above, and 6.1's verifier cannot see that the two agree. */
	asm volatile("" : "+r"(f));
	return f;
}

static __always_inline void *calls_map(const volatile struct func_info *f)
{
	return f->dir == DIR_HANDSHAKE ? (void *)&handshakes : (void *)&calls;
}

static __always_inline bool is_nspr_ssl_fd(__u64 fd)
{
	__u64 methods = 0;
	__s32 file_type = 0;

	bpf_probe_read_user(&methods, sizeof(methods), (void *)fd);
	bpf_probe_read_user(&file_type, sizeof(file_type), (void *)methods);
	return file_type == PR_DESC_LAYERED;
}

/* A record did not fit: `bytes` of the call will not be delivered; `announced` says
 * whether user space was told so by an end-of-call record. */
static __always_inline void count_loss(__u64 bytes, bool announced)
{
	struct stats *s = stats();

	if (!s)
		return;
	__sync_fetch_and_add(&s->lost_records, 1);
	/* Not an atomic add of 0: clang makes that an atomic or, which kernels before
	 * 5.12 cannot parse even where it is never run. */
	if (!bytes)
		return;
	__sync_fetch_and_add(&s->undelivered_bytes, bytes);
	if (!announced)
		__sync_fetch_and_add(&s->unannounced_bytes, bytes);
}

static __always_inline __u64 ringbuf_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > wakeup_watermark ?
		       BPF_RB_FORCE_WAKEUP :
		       BPF_RB_NO_WAKEUP;
}

/* bpf_ringbuf_reserve() takes only constant sizes, so a chunk goes into the smallest of
 * a few size classes: the payload is read straight into the record (no per-CPU scratch
 * that a preempted probe could share) and at most half of a record is slack. */
#define SEND_IN_CLASS(SIZE)                                                        \
	if (n <= SIZE) {                                                           \
		struct {                                                           \
			struct event_hdr hdr;                                      \
			__u8 data[SIZE];                                           \
		} *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);                \
		if (!r)                                                            \
			return -1;                                                 \
		__builtin_memcpy(&r->hdr, hdr, sizeof(*hdr));                      \
		r->hdr.chunk_len = n;                                              \
		if (bpf_probe_read_user(r->data, n, src)) {                        \
			bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);                  \
			return -1;                                                 \
		}                                                                  \
		bpf_ringbuf_submit(r, ringbuf_flags());                            \
		return 0;                                                          \
	}

static __always_inline int send_record(const struct event_hdr *hdr, const void *src, __u32 n)
{
	if (!n) {
		struct event_hdr *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

		if (!r)
			return -1;
		__builtin_memcpy(r, hdr, sizeof(*hdr));
		bpf_ringbuf_submit(r, ringbuf_flags());
		return 0;
	}
	SEND_IN_CLASS(128)
	SEND_IN_CLASS(256)
	SEND_IN_CLASS(512)
	SEND_IN_CLASS(1024)
	SEND_IN_CLASS(2048)
	SEND_IN_CLASS(4096)
	SEND_IN_CLASS(8192)
	SEND_IN_CLASS(MAX_CHUNK_SIZE)
	return -1;
}

struct chunk_ctx {
	struct event_hdr hdr;
	__u64 buf;
};

/* Sends the `n` bytes of chunk i of a call; on failure, marks and counts the rest of
 * the call as lost. Returns 1 to stop sending. */
static __always_inline long send_sized(__u64 i, struct chunk_ctx *c, __u64 n)
{
	__u64 offset = i * chunk_size;

	c->hdr.offset = offset;
	if (send_record(&c->hdr, (void *)(c->buf + offset), n)) {
		/* The rest of the call cannot arrive whole: count all of it, so user space
		 * and the counters agree on how many bytes are undelivered. An empty record
		 * at this offset tells user space that the rest will not come, so the call is
		 * printed now, marked incomplete, instead of vanishing or waiting for a
		 * timeout. If even that does not fit, a call of which some chunk arrived is
		 * still marked (by timeout); one of which nothing arrived is known only to
		 * the counters. */
		bool ended = !send_record(&c->hdr, 0, 0);

		count_loss(c->hdr.captured - offset, ended || offset > 0);
		return 1;
	}
	return 0;
}

/* Sends chunk i of a call, whatever its size. Returns 1 to stop the loop. */
static long send_chunk(__u64 i, struct chunk_ctx *c)
{
	__u64 offset = i * chunk_size;
	__u64 n;

	if (offset >= c->hdr.captured)
		return 1;
	n = c->hdr.captured - offset;
	if (n > chunk_size)
		n = chunk_size;
	return send_sized(i, c, n);
}

static long send_next_chunk(__u64 i, struct chunk_ctx *c)
{
	return send_chunk(i + 1, c);
}

/* Kernels without bpf_loop: chunk i of a call whose return program left its header in
 * the call's slot (the thread's, or for Go the goroutine's). A global function: the
 * verifier checks it once, on its own, where it would walk a loop that sends chunks
 * inline once for every turn, more than old verifiers can (6.1's gives up). Defined
 * after the Go slots it reads. Returns 1 to stop. */
int send_slot_chunk(struct pt_regs *ctx, __u32 i, __u32 go);

/* How a return program sends a call's payload; a constant in each program, so that
 * each holds only its own way: programs for kernels without bpf_loop hold only the
 * bounded loop, and the others only the bpf_loop call, whose callback reference older
 * kernels cannot even parse. Handshakes move no data: their programs send no payload. */
enum sending {
	SEND_HEADER_ONLY,
	SEND_BPF_LOOP,
	SEND_BOUNDED,
	/* One record at most: TLS records (rustls) are at most 16 KiB, one chunk unless
	 * the ring is small, and then the rest is truncated, as --max-buffer-size does. */
	SEND_ONE_CHUNK,
};

/* Reports a call that returned: its header, then its payload in chunks. `go` says
 * whose slot `call` is (a constant in each caller). */
static __always_inline void emit_call(struct pt_regs *ctx, const volatile struct func_info *f,
				      __u32 id, struct call *call, __u64 len, long ret,
				      enum sending how, bool go)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct chunk_ctx c = {};
	__u64 limit = max_capture;

	/* A bounded loop sends at most MAX_BOUNDED_CHUNKS records: the rest of a longer
	 * call is truncated, as --max-buffer-size truncates (user space says so at start). */
	if (how == SEND_BOUNDED && (!limit || limit > (__u64)bounded_chunks * chunk_size))
		limit = (__u64)bounded_chunks * chunk_size;
	if (how == SEND_ONE_CHUNK && (!limit || limit > chunk_size))
		limit = chunk_size;
	c.buf = call->buf;
	c.hdr.ts_ns = call->ts_ns;
	c.hdr.latency_ns = bpf_ktime_get_ns() - call->ts_ns;
	c.hdr.len = len;
	c.hdr.captured = (limit && len > limit) ? limit : len;
	c.hdr.ret = ret;
	c.hdr.tls_conn = call->tls_conn;
	c.hdr.cgroup_id = bpf_get_current_cgroup_id();
	c.hdr.func = id;
	c.hdr.pid = pid_tgid >> 32;
	c.hdr.tid = (__u32)pid_tgid;
	c.hdr.uid = (__u32)bpf_get_current_uid_gid();
	c.hdr.dir = f->dir;
	c.hdr.conn = call->conn;
	bpf_get_current_comm(c.hdr.comm, sizeof(c.hdr.comm));
	COUNT(calls, 1);

	if (how == SEND_HEADER_ONLY || !c.hdr.captured) {
		if (send_record(&c.hdr, 0, 0))
			count_loss(0, false);
		return;
	}
	/* Most calls fit one chunk: spare them the loop. */
	if (send_chunk(0, &c) || c.hdr.captured <= chunk_size || how == SEND_ONE_CHUNK)
		return;
	if (how == SEND_BPF_LOOP) {
		bpf_loop((c.hdr.captured + chunk_size - 1) / chunk_size - 1, send_next_chunk, &c,
			 0);
		return;
	}
	call->hdr = c.hdr;
	for (__u32 i = 1; i < bounded_chunks; i++)
		if (send_slot_chunk(ctx, i, go))
			break;
}

/* The byte count a call moved, from its return value; 0 for failures and would-block
 * retries, which carry no data. */
static __always_inline __u64 moved(const volatile struct func_info *f, long ret, __u64 out)
{
	__u64 len = 0;

	if (f->ret == RET_COUNT && ret > 0)
		len = ret;
	else if (f->ret == RET_EX && ret == 1)
		bpf_probe_read_user(&len, sizeof(len), (void *)out);
	return len;
}

/* The C calling convention: (tls_conn, buf, num[, out]) at entry, the result at return. */
static __always_inline int tls_enter_body(struct pt_regs *ctx, __u64 fixed)
{
	__u64 id = (__u32)cookie(ctx, fixed);
	const volatile struct func_info *f = func_at(id);
	__u64 tls_conn = PT_REGS_PARM1(ctx);
	struct call *call;

	if (!f || !wanted(bpf_get_current_pid_tgid()))
		return 0;
	if (f->nspr_fd && !is_nspr_ssl_fd(tls_conn))
		return 0;
	call = call_slot(calls_map(f), true);
	if (!call)
		return 0;
	call->buf = PT_REGS_PARM2(ctx);
	call->out = PT_REGS_PARM4(ctx);
	call->tls_conn = tls_conn;
	call->ts_ns = bpf_ktime_get_ns();
	call->conn.fd = -1;
	call->conn.family = 0;
	call->func = id;
	if (track_conn) {
		/* The cookie again, rather than kept: without tracking nothing changes. */
		call->ties = use_cookies ? !!(cookie(ctx, fixed) & COOKIE_TIES) :
					   f->untie && !ties_unsafe;
		bio_call_entry(call);
	}
	call->active = 1;
	return 0;
}

/* A C function's return. Each program reads one slot: handshakes have a slot of their
 * own, and their own return program. Without cookies the function is the one the
 * entry stored. */
static __always_inline int tls_exit_body(struct pt_regs *ctx, enum sending how)
{
	void *map = how == SEND_HEADER_ONLY ? (void *)&handshakes : (void *)&calls;
	long ret = PT_REGS_RC(ctx);
	const volatile struct func_info *f;
	struct call *call;
	__u64 id, len;

	call = call_slot(map, false);
	if (!call || !call->active)
		return 0;
	id = use_cookies ? (__u32)bpf_get_attach_cookie(ctx) : call->func;
	f = func_at(id);
	if (!f) {
		end_call(map, call);
		return 0;
	}
	/* Without this, an int -1 reads as 4294967295 bytes. */
	if (f->ret_int)
		ret = (int)ret;
	/* Every return, failed ones too: node drives its handshake through SSL_read calls
	 * that return -1, and what they send names the socket. */
	if (track_conn)
		bio_call_return(call);
	len = moved(f, ret, call->out);
	/* Only a handshake reports a call that moved nothing. With connection tracking,
	 * handshakes are probed for their socket even without --handshake: reported only
	 * with it. */
	if (len || (f->ret == RET_RAW && trace_handshakes))
		emit_call(ctx, f, id, call, len, ret, how, false);
	end_call(map, call);
	return 0;
}

SEC("uprobe")
int tls_enter(struct pt_regs *ctx)
{
	return tls_enter_body(ctx, 0);
}

SEC("uretprobe")
int tls_exit(struct pt_regs *ctx)
{
	return tls_exit_body(ctx, SEND_BPF_LOOP);
}

/* Kernels without bpf_loop (or cookies). */
SEC("uretprobe")
int tls_exit_bounded(struct pt_regs *ctx)
{
	return tls_exit_body(ctx, SEND_BOUNDED);
}

SEC("uretprobe")
int tls_exit_handshake(struct pt_regs *ctx)
{
	return tls_exit_body(ctx, SEND_HEADER_ONLY);
}

#include "go.bpf.h"
#include "aead.bpf.h"
#include "follow.bpf.h"

__noinline int send_slot_chunk(struct pt_regs *ctx, __u32 i, __u32 go)
{
	struct call *call = go ? go_slot(ctx) : call_slot(&calls, false);
	struct chunk_ctx c;

	if (!call)
		return 1;
	c.hdr = call->hdr;
	c.buf = call->buf;
	return send_chunk(i, &c);
}

/* Kernels without cookies: one small entry program per function of the table, each
 * passing its index; the body is one subprogram that all of them share. The returns
 * need no such programs: the entry stores the function in the call's state. */
static __noinline int tls_enter_fixed(struct pt_regs *ctx, __u32 id)
{
	return tls_enter_body(ctx, id);
}

static __noinline int go_enter_fixed(struct pt_regs *ctx, __u32 id)
{
	return go_enter_body(ctx, id);
}

#define FIXED(N)                                                                   \
	SEC("uprobe") int tls_enter_##N(struct pt_regs *ctx)                       \
	{                                                                          \
		return tls_enter_fixed(ctx, N);                                    \
	}                                                                          \
	SEC("uprobe") int go_enter_##N(struct pt_regs *ctx)                        \
	{                                                                          \
		return go_enter_fixed(ctx, N);                                     \
	}
/* Indexes 0 to MAX_FIXED_FUNCS - 1. */
FIXED(0) FIXED(1) FIXED(2) FIXED(3) FIXED(4) FIXED(5) FIXED(6) FIXED(7)
FIXED(8) FIXED(9) FIXED(10) FIXED(11) FIXED(12) FIXED(13) FIXED(14) FIXED(15)
FIXED(16) FIXED(17) FIXED(18) FIXED(19) FIXED(20) FIXED(21) FIXED(22) FIXED(23)
FIXED(24) FIXED(25) FIXED(26) FIXED(27) FIXED(28) FIXED(29) FIXED(30) FIXED(31)

char LICENSE[] SEC("license") = "GPL";
