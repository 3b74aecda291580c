/* SPDX-License-Identifier: GPL-2.0-only */
/* Connection tracking. Loaded only when asked for: its hook sees every syscall on the
 * machine.
 *
 * A call that does socket I/O itself (a socket BIO: curl, Python's blocking ssl) names
 * its socket: while the call is in flight on a thread, the socket syscall it makes gives
 * the fd, and through the task's file table, the socket.
 *
 * A connection object fed through memory BIOs (node's TLSWrap, Python's asyncio) makes
 * no socket syscall inside its calls: its thread moves the ciphertext between the socket
 * and the library around them. Both runtimes do it at once, in the same turn of their
 * event loop (strace of node 20 and Python 3.11, docs/connections.md):
 *  - read side: the socket read that brought the ciphertext is the thread's last socket
 *    syscall before the TLS call that consumes it;
 *  - write side: the socket write that sends what a TLS call produced is the thread's
 *    first socket syscall after it.
 * Each side names a socket for the object, and counts only when the bytes moved start a
 * TLS record. A tie needs the first of each side to name the same socket. An event loop
 * serves many connections on one thread, and a socket read may be followed by a TLS
 * call on another connection: one side alone is a guess, so any disagreement refuses
 * the tie for good, and so does any call of the object that did socket I/O itself (it
 * is not fed through memory). A poll, select or epoll wait, or
 * an exec, ends the turn: nothing seen before it counts after it. Only objects whose
 * library's free is probed are tied (COOKIE_TIES): a tie ends when the object is freed
 * or readied for another connection, since the next object at that address is another
 * connection. A tie is kept per process and object, and belongs to one process's life
 * and address space (a reused pid, or an exec, starts over). */

/* Address families, as the socket ABI fixes them. */
#define AF_INET 2
#define AF_INET6 10

enum socket_io {
	IO_NONE,
	IO_READ,
	IO_WRITE,
	IO_TURN_END, /* the thread waits for events, or runs another program */
};

static __always_inline enum socket_io socket_io(long id)
{
	switch (id) {
	case __NR_read:
	case __NR_readv:
	case __NR_recvfrom:
	case __NR_recvmsg:
		return IO_READ;
	case __NR_write:
	case __NR_writev:
	case __NR_sendto:
	case __NR_sendmsg:
		return IO_WRITE;
	/* arm64 has only the newer calls of each kind. */
#ifdef __NR_epoll_wait
	case __NR_epoll_wait:
#endif
#ifdef __NR_epoll_pwait2
	case __NR_epoll_pwait2:
#endif
#ifdef __NR_poll
	case __NR_poll:
#endif
#ifdef __NR_select
	case __NR_select:
#endif
	case __NR_epoll_pwait:
	case __NR_ppoll:
	case __NR_pselect6:
	case __NR_execve:
	case __NR_execveat:
		return IO_TURN_END;
	}
	return IO_NONE;
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

/* The socket of `file`, or null when it is not one. */
static __always_inline struct socket *socket_of(struct file *file)
{
	struct socket *sock;

	if (!file)
		return 0;
	/* A socket's file and socket point at each other; other files' private data
	 * does not point back. */
	sock = BPF_CORE_READ(file, private_data);
	if (!sock || BPF_CORE_READ(sock, file) != file)
		return 0;
	return sock;
}

/* The socket at fd in the current task, or null when fd is not a socket. */
static __always_inline struct sock *socket_at(__u32 fd)
{
	struct socket *sock = socket_of(file_at(fd));

	return sock ? BPF_CORE_READ(sock, sk) : 0;
}

/* The addresses of socket sk at fd, when it is an IPv4 or IPv6 one (family 0 if not). */
static __always_inline void read_addresses(struct conn *c, __u32 fd, struct sock *sk)
{
	c->fd = fd;
	c->family = 0;
	if (!sk)
		return;
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
}

/* Whether `file`, at fd, is a socket; fills in its addresses when it is an IPv4 or IPv6
 * one. */
static __always_inline bool read_socket(struct conn *c, struct file *file, __u32 fd)
{
	struct socket *sock = socket_of(file);

	if (!sock)
		return false;
	read_addresses(c, fd, BPF_CORE_READ(sock, sk));
	return true;
}

/* As read_socket, for a thread's call: the socket the thread's last call used is kept in
 * its slot, and a thread mostly makes call after call on one connection, so most calls
 * find their socket there and skip reading it. The file and its inode name the socket:
 * a file freed and reused at the same address and fd has a new inode (sockfs numbers
 * its inodes in sequence). Only connected sockets are kept: their addresses no longer
 * change. On kernels without task storage the slot is given back after each call and
 * nothing is kept. */
static __always_inline void read_call_socket(struct call *call, __u32 fd)
{
	struct file *file = file_at(fd);
	__u64 ino;

	if (!file)
		return;
	ino = BPF_CORE_READ(file, f_inode, i_ino);
	if (ino && call->last.file == (__u64)file && call->last.ino == ino) {
		call->conn = call->last.conn;
		call->conn.fd = fd;
		return;
	}
	if (!read_socket(&call->conn, file, fd) || !call->conn.family || !call->conn.rport)
		return;
	call->last.file = (__u64)file;
	call->last.ino = ino;
	call->last.conn = call->conn;
}

/* The first socket a call does I/O on is its connection: a call's other syscalls may
 * log to a file or poll, and those fds are not sockets, so they never win. Says whether
 * a call is in flight in `map`'s slot of the thread. */
static __always_inline bool note_socket(void *map, __u64 fd)
{
	struct call *call = call_slot(map, false);

	if (!call || !call->active)
		return false;
	if (call->conn.fd < 0)
		read_call_socket(call, fd);
	return true;
}

enum tie_state {
	TIE_LEARNING = 0,
	TIE_DONE = 1,
	TIE_REFUSED = 2,
};

struct tie_key {
	__u32 pid;
	__u32 pad;
	__u64 tls_conn;
};

struct tie {
	/* Whose: the process's start and its address space. */
	__u64 start_ns;
	__u64 mm;
	/* The socket each side named (its struct sock), 0 while not seen. */
	__u64 read_sk;
	__u64 write_sk;
	struct conn conn; /* the socket, once tied */
	__u32 state;      /* enum tie_state */
	__u32 pad;
};

/* Bounded: past it the least recently used object is forgotten, and learns again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 15);
	__type(key, struct tie_key);
	__type(value, struct tie);
} ties SEC(".maps");

/* What a thread did between its TLS calls, in the current turn of its event loop. */
struct bio_watch {
	/* The object whose call returned last, until the thread's next socket syscall. */
	__u64 after_call;
	/* The socket the thread read last, until its next TLS call or socket write;
	 * read_fd is its fd. */
	__u64 read_sk;
	__s32 read_fd;
	__u32 pad;
	__u64 read_buf; /* where that read put its bytes */
};

/* Per thread, as `calls` (a hash by thread without task storage). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct bio_watch);
} bio_watches SEC(".maps");

/* The thread's watch, created only by TLS calls: threads that never make one do their
 * socket I/O without anything kept. */
static __always_inline struct bio_watch *watch_slot(bool create)
{
	static const struct bio_watch empty;

	return thread_slot(&bio_watches, &empty, create);
}

static __always_inline void tie_owner(struct tie *t)
{
	struct task_struct *task = (void *)bpf_get_current_task();

	t->start_ns = BPF_CORE_READ(task, group_leader, start_time);
	t->mm = (__u64)BPF_CORE_READ(task, mm);
}

/* The tie state of `tls_conn` in this process, started over (as `state`) when missing
 * or left by another process or program. Null when the table cannot take it. */
static __always_inline struct tie *tie_of(__u64 tls_conn, enum tie_state state)
{
	struct tie_key key = { .pid = bpf_get_current_pid_tgid() >> 32, .tls_conn = tls_conn };
	struct tie owner = {}, *t = bpf_map_lookup_elem(&ties, &key);

	tie_owner(&owner);
	if (t && t->start_ns == owner.start_ns && t->mm == owner.mm)
		return t;
	owner.state = state;
	owner.conn.fd = -1;
	bpf_map_update_elem(&ties, &key, &owner, BPF_ANY);
	return bpf_map_lookup_elem(&ties, &key);
}

/* The tie of `tls_conn` in this process, if it has one. */
static __always_inline struct tie *tie_done(__u64 tls_conn)
{
	struct tie_key key = { .pid = bpf_get_current_pid_tgid() >> 32, .tls_conn = tls_conn };
	struct tie owner = {}, *t = bpf_map_lookup_elem(&ties, &key);

	if (!t || t->state != TIE_DONE)
		return 0;
	tie_owner(&owner);
	return t->start_ns == owner.start_ns && t->mm == owner.mm ? t : 0;
}

/* One side named socket sk (at fd) for tls_conn. */
static __always_inline void observe(__u64 tls_conn, bool read_side, __u64 sk, __s32 fd)
{
	struct tie *t = tie_of(tls_conn, TIE_LEARNING);
	__u64 *mine, other;

	if (!t || t->state != TIE_LEARNING)
		return;
	mine = read_side ? &t->read_sk : &t->write_sk;
	other = read_side ? t->write_sk : t->read_sk;
	if ((*mine && *mine != sk) || (other && other != sk)) {
		t->state = TIE_REFUSED;
		return;
	}
	*mine = sk;
	if (!other)
		return;
	read_addresses(&t->conn, fd, (struct sock *)sk);
	t->state = TIE_DONE;
}

/* The object did socket I/O inside a call: it is not fed through memory. Called for
 * every call of a socket BIO: an object already refused costs one lookup (whoever
 * refused it: refusing is never wrong). */
static __always_inline void refuse(__u64 tls_conn)
{
	struct tie_key key = { .pid = bpf_get_current_pid_tgid() >> 32, .tls_conn = tls_conn };
	struct tie *t = bpf_map_lookup_elem(&ties, &key);

	if (t && t->state == TIE_REFUSED)
		return;
	t = tie_of(tls_conn, TIE_REFUSED);
	if (t && t->state == TIE_LEARNING)
		t->state = TIE_REFUSED;
}

/* An IPv4 or IPv6 socket: only these can carry a tie (socketpairs and netlink, which
 * event loops use to wake themselves, cannot). */
static __always_inline bool is_inet(struct sock *sk)
{
	__u16 family = sk ? BPF_CORE_READ(sk, __sk_common.skc_family) : 0;

	return family == AF_INET || family == AF_INET6;
}

/* Where socket syscall `id` takes or puts its first bytes: write, sendto, read and
 * recvfrom take the buffer, the vector calls an iovec array, sendmsg and recvmsg a
 * msghdr (the user ABI fixes both layouts). */
static __always_inline __u64 io_buffer(long id, const struct pt_regs *regs)
{
	__u64 arg = PT_REGS_PARM2(regs), iov = arg, base = 0;

	if (id == __NR_sendmsg || id == __NR_recvmsg) {
		iov = 0;
		bpf_probe_read_user(&iov, sizeof(iov), (void *)(arg + 16)); /* msg_iov */
	} else if (id != __NR_writev && id != __NR_readv) {
		return arg;
	}
	bpf_probe_read_user(&base, sizeof(base), (void *)iov); /* iov_base */
	return base;
}

/* Whether the bytes at `p` start a TLS record: a content type (change cipher spec,
 * alert, handshake, application data), then version 3.x. Plain text never does. */
static __always_inline bool starts_tls_record(__u64 p)
{
	__u8 h[3] = {};

	if (!p || bpf_probe_read_user(h, sizeof(h), (void *)p))
		return false;
	return h[0] >= 20 && h[0] <= 23 && h[1] == 3 && h[2] <= 4;
}

/* Syscall `id` of a thread outside any TLS call. */
static __always_inline void watch_io(enum socket_io io, long id, const struct pt_regs *regs)
{
	__u32 fd = PT_REGS_PARM1(regs);
	struct bio_watch *w = watch_slot(false);
	struct sock *sk;
	__u64 after;

	if (!w)
		return;
	if (io == IO_TURN_END) {
		w->after_call = 0;
		w->read_sk = 0;
		return;
	}
	/* A write with nothing to claim it, or to end, needs no look at the fd. */
	if (io == IO_WRITE && !w->after_call && !w->read_sk)
		return;
	/* Files, pipes and eventfds are not part of either side: logging between the
	 * read and the call changes nothing. */
	sk = socket_at(fd);
	if (!sk)
		return;
	after = w->after_call;
	w->after_call = 0;
	if (io == IO_READ) {
		w->read_sk = is_inet(sk) ? (__u64)sk : 0;
		w->read_fd = fd;
		w->read_buf = io_buffer(id, regs);
		return;
	}
	w->read_sk = 0;
	if (after && is_inet(sk) && starts_tls_record(io_buffer(id, regs)))
		observe(after, false, (__u64)sk, fd);
}

/* A C TLS call's entry: it takes the socket read just before it, if no other TLS call
 * took it first. The read is over by now: its bytes are there to check. */
static __always_inline void bio_call_entry(struct call *call)
{
	struct bio_watch *w = watch_slot(false);

	call->read_sk = 0;
	if (!w)
		return;
	if (call->ties && w->read_sk && starts_tls_record(w->read_buf)) {
		call->read_sk = w->read_sk;
		call->read_fd = w->read_fd;
	}
	w->read_sk = 0;
}

/* A C TLS call's return, before it is reported: what it tells of its object's socket,
 * and the socket of a call that did no socket I/O itself, when its object is tied. */
static __always_inline void bio_call_return(struct call *call)
{
	bool fed = call->conn.fd < 0 && call->ties;
	struct bio_watch *w = watch_slot(fed);
	struct tie *t;

	if (w)
		w->after_call = fed ? call->tls_conn : 0;
	if (call->conn.fd >= 0) {
		if (call->ties)
			refuse(call->tls_conn);
		return;
	}
	if (!call->ties)
		return;
	if (call->read_sk)
		observe(call->tls_conn, true, call->read_sk, call->read_fd);
	t = tie_done(call->tls_conn);
	if (t)
		call->conn = t->conn;
}

/* A BTF tracepoint: the registers are read directly, not through a helper call, which
 * matters in a hook that every syscall on the machine runs. */
SEC("tp_btf/sys_enter")
int BPF_PROG(conn_fd, struct pt_regs *regs, long id)
{
	enum socket_io io = socket_io(id);
	__u64 fd;

	if (io == IO_NONE)
		return 0;
	fd = PT_REGS_PARM1(regs);
	/* A handshake's I/O names its socket too; reads and writes may nest inside one. */
	if (io != IO_TURN_END && (note_socket(&calls, fd) | note_socket(&handshakes, fd)))
		return 0;
	watch_io(io, id, regs);
	return 0;
}

/* The object is freed, or readied for another connection or transport (SSL_free,
 * SSL_clear, SSL_set_bio, ...): its tie ends. Attached only with connection tracking,
 * and before the file's other probes. */
SEC("uprobe")
int tls_untie(struct pt_regs *ctx)
{
	struct tie_key key = { .pid = bpf_get_current_pid_tgid() >> 32,
			       .tls_conn = PT_REGS_PARM1(ctx) };
	struct bio_watch *w = watch_slot(false);

	bpf_map_delete_elem(&ties, &key);
	if (w && w->after_call == key.tls_conn)
		w->after_call = 0;
	return 0;
}
