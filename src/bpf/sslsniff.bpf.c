// SPDX-License-Identifier: GPL-2.0-only
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
/* Connection tracking is on: Go probes read the socket through the receiver. */
const volatile bool track_conn = false;
/* Handshakes are probed (--handshake). */
const volatile bool trace_handshakes = false;
/* Set by user space at exit: on kernels without multi-uprobe links the probes are
 * closed in the background, slowly; until then they must cost no more than the trap. */
volatile bool stopped = false;

/* NSPR's PRIOMethods.file_type for a layered descriptor: the SSL layer sits on one,
 * plain files and sockets do not. */
#define PR_DESC_LAYERED 4

struct call {
	__u64 buf;
	__u64 out;
	__u64 tls_conn;
	__u64 ts_ns;
	struct conn conn;
	__u32 active; /* a call is in flight; cleared on every return path */
};

/* Per-thread state lives with the thread (task storage): the kernel frees it when the
 * thread exits, so threads that die inside a call cannot fill anything, and a live call
 * can never be evicted the way an LRU hash evicts under pressure. It is also much
 * cheaper than hashing: update, lookup and delete were a third of a probe's cost. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct call);
} calls SEC(".maps");

/* Handshakes nest around reads and writes in some libraries: their own slot keeps the
 * two from overwriting each other. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct call);
} handshakes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stats);
} counters SEC(".maps");

/* Sized by user space before load (--ring-buffer-size). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 20);
} events SEC(".maps");

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
	if (targ_pid && (pid_tgid >> 32) != targ_pid)
		return false;
	if (targ_uid != (__u32)-1 && (__u32)bpf_get_current_uid_gid() != targ_uid)
		return false;
	return comm_matches();
}

static __always_inline bool is_nspr_ssl_fd(__u64 fd)
{
	__u64 methods = 0;
	__s32 file_type = 0;

	bpf_probe_read_user(&methods, sizeof(methods), (void *)fd);
	bpf_probe_read_user(&file_type, sizeof(file_type), (void *)methods);
	return file_type == PR_DESC_LAYERED;
}

static __always_inline const volatile struct func_info *func_of(void *ctx)
{
	/* The upper half of a Go probe's cookie is its layout index. */
	__u64 func = (__u32)bpf_get_attach_cookie(ctx);

	if (func >= MAX_FUNCS)
		return 0;
	/* The mask keeps clang from indexing before the check (MAX_FUNCS is a power of 2). */
	return &funcs[func & (MAX_FUNCS - 1)];
}

static __always_inline void *calls_map(const volatile struct func_info *f)
{
	return f->dir == DIR_HANDSHAKE ? (void *)&handshakes : (void *)&calls;
}

SEC("uprobe")
int BPF_UPROBE(tls_enter, __u64 tls_conn, __u64 buf, __u64 num, __u64 out)
{
	const volatile struct func_info *f = func_of(ctx);
	struct call *call;

	if (!f || stopped || !wanted(bpf_get_current_pid_tgid()))
		return 0;
	if (f->nspr_fd && !is_nspr_ssl_fd(tls_conn))
		return 0;
	call = bpf_task_storage_get(calls_map(f), bpf_get_current_task_btf(), 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!call)
		return 0;
	call->buf = buf;
	call->out = out;
	call->tls_conn = tls_conn;
	call->ts_ns = bpf_ktime_get_ns();
	call->conn.fd = -1;
	call->conn.family = 0;
	call->active = 1;
	return 0;
}

static __always_inline struct stats *stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&counters, &zero);
}

/* Per-CPU, but atomic: a preempted probe can race another task's probe on the CPU. */
static __always_inline void count_call(void)
{
	struct stats *s = stats();

	if (s)
		__sync_fetch_and_add(&s->calls, 1);
}

/* A record did not fit: `bytes` of the call will not be delivered; `announced` says
 * whether user space was told so by an end-of-call record. */
static __always_inline void count_loss(__u64 bytes, bool announced)
{
	struct stats *s = stats();

	if (!s)
		return;
	__sync_fetch_and_add(&s->lost_records, 1);
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

/* Sends chunk i of a call. Returns 1 to stop the loop. */
static long send_chunk(__u64 i, struct chunk_ctx *c)
{
	__u64 offset = i * chunk_size;
	__u64 n;

	if (offset >= c->hdr.captured)
		return 1;
	n = c->hdr.captured - offset;
	if (n > chunk_size)
		n = chunk_size;
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

/* Reports a call that returned: its header, then its payload in chunks. */
static __always_inline void emit_call(void *ctx, const volatile struct func_info *f,
				      struct call *call, __u64 len, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct chunk_ctx c = {};

	c.buf = call->buf;
	c.hdr.ts_ns = call->ts_ns;
	c.hdr.latency_ns = bpf_ktime_get_ns() - call->ts_ns;
	c.hdr.len = len;
	c.hdr.captured = (max_capture && len > max_capture) ? max_capture : len;
	c.hdr.ret = ret;
	c.hdr.tls_conn = call->tls_conn;
	c.hdr.func = (__u32)bpf_get_attach_cookie(ctx);
	c.hdr.pid = pid_tgid >> 32;
	c.hdr.tid = (__u32)pid_tgid;
	c.hdr.uid = (__u32)bpf_get_current_uid_gid();
	c.hdr.dir = f->dir;
	c.hdr.conn = call->conn;
	bpf_get_current_comm(c.hdr.comm, sizeof(c.hdr.comm));
	count_call();

	if (!c.hdr.captured) {
		if (send_record(&c.hdr, 0, 0))
			count_loss(0, false);
		return;
	}
	/* Most calls fit one chunk: spare them the loop's indirect calls. */
	if (c.hdr.captured <= chunk_size)
		send_chunk(0, &c);
	else
		bpf_loop((c.hdr.captured + chunk_size - 1) / chunk_size, send_chunk, &c, 0);
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

SEC("uretprobe")
int BPF_URETPROBE(tls_exit, long ret)
{
	const volatile struct func_info *f = func_of(ctx);
	struct call *call;
	__u64 len;

	if (!f)
		return 0;
	call = bpf_task_storage_get(calls_map(f), bpf_get_current_task_btf(), 0, 0);
	if (!call || !call->active)
		return 0;
	/* Without this, an int -1 reads as 4294967295 bytes. */
	if (f->ret_int)
		ret = (int)ret;
	len = moved(f, ret, call->out);
	/* Only a handshake reports a call that moved nothing. */
	if (len || f->ret == RET_RAW)
		emit_call(ctx, f, call, len, ret);
	call->active = 0;
	return 0;
}

#include "aead.bpf.h"

/* Connection tracking: while a TLS call is in flight on a thread, the socket I/O it does
 * names the fd, and through the task's file table, the socket. Loaded only when asked
 * for: this hook sees every syscall on the machine. */

/* Address families, as the socket ABI fixes them. */
#define AF_INET 2
#define AF_INET6 10

/* Only the fields read here; CO-RE finds them in the running kernel's layout. */
struct sock_common {
	union {
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct super_block {
	__u32 s_dev;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	void *private_data;
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct linux_binprm {
	struct file *file;
} __attribute__((preserve_access_index));

struct socket {
	struct file *file;
	struct sock *sk;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct task_struct {
	struct files_struct *files;
} __attribute__((preserve_access_index));

static __always_inline bool is_socket_io(long id)
{
	switch (id) {
	case __NR_read:
	case __NR_write:
	case __NR_readv:
	case __NR_writev:
	case __NR_sendto:
	case __NR_recvfrom:
	case __NR_sendmsg:
	case __NR_recvmsg:
		return true;
	}
	return false;
}

/* The current task's open file at fd, or null. */
static __always_inline struct file *file_at(__u32 fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = 0;

	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* Whether fd is a socket of the current task; fills in its addresses when it is an IPv4
 * or IPv6 one. */
static __always_inline bool read_socket(struct conn *c, __u32 fd)
{
	struct file *file = file_at(fd);
	struct socket *sock;
	struct sock *sk;

	if (!file)
		return false;
	/* A socket's file and socket point at each other; other files' private data
	 * does not point back. */
	sock = BPF_CORE_READ(file, private_data);
	if (!sock || BPF_CORE_READ(sock, file) != file)
		return false;
	c->fd = fd;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return true;
	c->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	c->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	c->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (c->family == AF_INET) {
		bpf_core_read(c->laddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(c->raddr, 4, &sk->__sk_common.skc_daddr);
	} else if (c->family == AF_INET6) {
		bpf_core_read(c->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(c->raddr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		c->family = 0;
	}
	return true;
}

/* The first socket a call does I/O on is its connection: a call's other syscalls may
 * log to a file or poll, and those fds are not sockets, so they never win. */
static __always_inline void note_socket(void *map, __u64 fd)
{
	struct call *call = bpf_task_storage_get(map, bpf_get_current_task_btf(), 0, 0);

	if (call && call->active && call->conn.fd < 0)
		read_socket(&call->conn, fd);
}

/* A BTF tracepoint: the registers are read directly, not through a helper call, which
 * matters in a hook that every syscall on the machine runs. */
SEC("tp_btf/sys_enter")
int BPF_PROG(conn_fd, struct pt_regs *regs, long id)
{
	__u64 fd;

	if (!is_socket_io(id))
		return 0;
	fd = PT_REGS_PARM1(regs);
	note_socket(&calls, fd);
	/* A handshake's I/O names its socket too; reads and writes may nest inside one.
	 * Without --handshake no handshake is probed: spare every syscall the lookup. */
	if (trace_handshakes)
		note_socket(&handshakes, fd);
	return 0;
}

/* Go's crypto/tls. Never a uretprobe: Go moves goroutine stacks, and a rewritten return
 * address on one crashes the program. The entry and every RET instruction (found by
 * disassembly in user space) get plain uprobes. Arguments and results are in Go's
 * registers, and a call is tied to its return by goroutine, not thread: a goroutine may
 * move to another thread inside a call. A panic skips every RET, so the state lives in
 * a bounded LRU map and each entry overwrites its goroutine's slot. */
#if defined(__TARGET_ARCH_x86)
#define GO_ARG0(r) ((r)->rax)
#define GO_ARG1(r) ((r)->rbx)
#define GO_RET0(r) ((r)->rax)
#define GO_G(r) ((r)->r14)
#elif defined(__TARGET_ARCH_arm64)
#define GO_ARG0(r) (((struct user_pt_regs *)(r))->regs[0])
#define GO_ARG1(r) (((struct user_pt_regs *)(r))->regs[1])
#define GO_RET0(r) (((struct user_pt_regs *)(r))->regs[0])
#define GO_G(r) (((struct user_pt_regs *)(r))->regs[28])
#else
#error "Go's register ABI is known for x86-64 and arm64 only"
#endif

struct go_key {
	__u32 pid;
	__u32 pad;
	__u64 goroutine;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, struct go_key);
	__type(value, struct call);
} go_calls SEC(".maps");

/* The socket of a *crypto/tls.Conn, when its net.Conn is a *net.TCPConn and the
 * program's struct layout is known; otherwise the connection stays unknown. */
static __always_inline void go_socket(struct conn *c, __u64 tls_conn, __u64 layout)
{
	const volatile struct go_fd_path *p;
	__u64 tab = 0, data = 0, netfd = 0;
	__s64 fd = -1;
	__u32 hash = 0;

	if (!layout || layout > MAX_GO_FD_PATHS)
		return;
	p = &go_fd_paths[(layout - 1) & (MAX_GO_FD_PATHS - 1)];
	bpf_probe_read_user(&tab, sizeof(tab), (void *)(tls_conn + p->conn));
	bpf_probe_read_user(&data, sizeof(data), (void *)(tls_conn + p->conn + 8));
	bpf_probe_read_user(&hash, sizeof(hash), (void *)(tab + p->itab_hash));
	if (!tab || hash != p->tcp_conn_hash)
		return;
	bpf_probe_read_user(&netfd, sizeof(netfd), (void *)(data + p->tcp_conn_fd));
	bpf_probe_read_user(&fd, sizeof(fd), (void *)(netfd + p->netfd_sysfd));
	if (fd >= 0 && fd < (1 << 30))
		read_socket(c, fd);
}

SEC("uprobe")
int go_enter(struct pt_regs *ctx)
{
	const volatile struct func_info *f = func_of(ctx);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct go_key key = { .pid = pid_tgid >> 32, .goroutine = GO_G(ctx) };
	struct call call = {};

	if (!f || stopped || !wanted(pid_tgid))
		return 0;
	call.tls_conn = GO_ARG0(ctx);
	call.buf = GO_ARG1(ctx);
	call.ts_ns = bpf_ktime_get_ns();
	call.conn.fd = -1;
	call.active = 1;
	if (track_conn)
		go_socket(&call.conn, call.tls_conn, bpf_get_attach_cookie(ctx) >> 32);
	/* A stack check may run the entry twice (morestack jumps back to it) with the same
	 * arguments: overwriting is right. */
	bpf_map_update_elem(&go_calls, &key, &call, BPF_ANY);
	return 0;
}

SEC("uprobe")
int go_exit(struct pt_regs *ctx)
{
	const volatile struct func_info *f = func_of(ctx);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct go_key key = { .pid = pid_tgid >> 32, .goroutine = GO_G(ctx) };
	long ret = GO_RET0(ctx);
	struct call *call;
	__u64 len;

	if (!f)
		return 0;
	call = bpf_map_lookup_elem(&go_calls, &key);
	if (!call)
		return 0;
	if (f->ret == RET_ERR_IFACE)
		ret = ret ? -1 : 0;
	len = moved(f, ret, 0);
	if (len || f->ret == RET_ERR_IFACE)
		emit_call(ctx, f, call, len, ret);
	bpf_map_delete_elem(&go_calls, &key);
	return 0;
}

/* Following the machine. Uprobes sit on files, so only a file never examined needs
 * user space: the exec of a new executable, or an executable mapping (the loader's, a
 * dlopen, a container's copy, an upgraded library's new inode). Files user space has
 * examined are in seen_files, so the common case (the thousandth /bin/true, libc)
 * costs a lookup and no wake-up. Loaded unless --no-follow. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct file_id);
	__type(value, __u8);
} seen_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} found SEC(".maps");

#define PROT_EXEC 4

/* Only inlined code uses the record's type; this keeps it in the BTF that the Rust
 * skeleton's types are generated from. */
const struct found_event *found_event_type __attribute__((unused));

static __always_inline void report_file(struct file *file, enum found_kind kind)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct found_event *e;
	struct file_id id;

	if (!file || (targ_pid && (pid_tgid >> 32) != targ_pid))
		return;
	id.ino = BPF_CORE_READ(file, f_inode, i_ino);
	id.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	if (bpf_map_lookup_elem(&seen_files, &id))
		return;
	e = bpf_ringbuf_reserve(&found, sizeof(*e), 0);
	if (!e)
		return;
	e->ts_ns = bpf_ktime_get_ns();
	e->file = id;
	e->pid = pid_tgid >> 32;
	e->kind = kind;
	/* User space attaches as soon as it hears: wake it now. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(follow_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	report_file(BPF_CORE_READ(bprm, file), FOUND_EXEC);
	return 0;
}

/* An executable mapping of a file, at syscall exit: the mapping exists by then, so user
 * space finds it in /proc/PID/maps. */
static __always_inline void mapped(const struct pt_regs *regs, long ret)
{
	if ((unsigned long)ret >= (unsigned long)-4095 || !(PT_REGS_PARM3(regs) & PROT_EXEC))
		return;
	report_file(file_at(PT_REGS_PARM5(regs)), FOUND_MMAP);
}

/* The mmap syscall's own tracepoint: only mmap runs it, while every other syscall pays
 * just the kernel's check of which syscalls are traced. User space attaches it when it
 * can learn the tracepoint's id (tracefs), and follow_mmap otherwise. */
struct syscall_exit_args {
	__u64 common;
	__s32 nr;
	__s32 pad;
	__s64 ret;
};

SEC("tracepoint/syscalls/sys_exit_mmap")
int follow_mmap_tp(struct syscall_exit_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	mapped(regs, ctx->ret);
	return 0;
}

/* The same from the raw syscall-exit tracepoint, which runs on every syscall of the
 * machine: a BTF tracepoint, so that the registers are read without a helper call. */
SEC("tp_btf/sys_exit")
int BPF_PROG(follow_mmap, struct pt_regs *regs, long ret)
{
	if (regs->orig_rax == __NR_mmap)
		mapped(regs, ret);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
