/* SPDX-License-Identifier: GPL-2.0-only */
/* Connection tracking: while a TLS call is in flight on a thread, the socket I/O it does
 * names the fd, and through the task's file table, the socket. Loaded only when asked
 * for: this hook sees every syscall on the machine. */

/* Address families, as the socket ABI fixes them. */
#define AF_INET 2
#define AF_INET6 10

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

/* Whether `file`, at fd, is a socket; fills in its addresses when it is an IPv4 or IPv6
 * one. */
static __always_inline bool socket_of(struct conn *c, struct file *file, __u32 fd)
{
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

/* Whether fd is a socket of the current task; fills in its addresses when it is an IPv4
 * or IPv6 one. */
static __always_inline bool read_socket(struct conn *c, __u32 fd)
{
	return socket_of(c, file_at(fd), fd);
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
	if (!socket_of(&call->conn, file, fd) || !call->conn.family || !call->conn.rport)
		return;
	call->last.file = (__u64)file;
	call->last.ino = ino;
	call->last.conn = call->conn;
}

/* The first socket a call does I/O on is its connection: a call's other syscalls may
 * log to a file or poll, and those fds are not sockets, so they never win. */
static __always_inline void note_socket(void *map, __u64 fd)
{
	struct call *call = call_slot(map, false);

	if (call && call->active && call->conn.fd < 0)
		read_call_socket(call, fd);
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
