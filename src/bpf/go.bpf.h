/* SPDX-License-Identifier: GPL-2.0-only */
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

/* Kernels without cookies: a Go executable's struct layout (index + 1 into
 * go_fd_paths), by the file the process runs, filled by user space as it attaches. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 10);
	__type(key, struct file_id);
	__type(value, __u32);
} go_layouts SEC(".maps");

/* The layout of the running Go program: with cookies, the upper half of the entry
 * probe's cookie; without, looked up by the process's executable (Go's code is in it). */
static __always_inline __u64 go_layout(void *ctx)
{
	struct task_struct *task;
	struct file_id exe;
	__u32 *layout;

	if (use_cookies)
		return bpf_get_attach_cookie(ctx) >> 32;
	task = (void *)bpf_get_current_task();
	exe = file_id_of(BPF_CORE_READ(task, mm, exe_file));
	layout = bpf_map_lookup_elem(&go_layouts, &exe);
	return layout ? *layout : 0;
}

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
		read_socket(c, file_at(fd), fd);
}

static __always_inline int go_enter_body(struct pt_regs *ctx, __u64 fixed)
{
	__u64 id = (__u32)cookie(ctx, fixed);
	const volatile struct func_info *f = func_at(id);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct go_key key = { .pid = pid_tgid >> 32, .goroutine = GO_G(ctx) };
	struct call call = {};

	if (!f || !wanted(pid_tgid))
		return 0;
	call.tls_conn = GO_ARG0(ctx);
	call.buf = GO_ARG1(ctx);
	call.ts_ns = bpf_ktime_get_ns();
	call.conn.fd = -1;
	call.func = id;
	call.active = 1;
	if (track_conn)
		go_socket(&call.conn, call.tls_conn, go_layout(ctx));
	/* A stack check may run the entry twice (morestack jumps back to it) with the same
	 * arguments: overwriting is right. */
	bpf_map_update_elem(&go_calls, &key, &call, BPF_ANY);
	return 0;
}

/* The current goroutine's call slot. */
static __always_inline struct call *go_slot(struct pt_regs *ctx)
{
	struct go_key key = { .pid = bpf_get_current_pid_tgid() >> 32, .goroutine = GO_G(ctx) };

	return bpf_map_lookup_elem(&go_calls, &key);
}

/* A Go function's return: the function is the one whose entry this goroutine made. */
static __always_inline int go_exit_body(struct pt_regs *ctx, enum sending how)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct go_key key = { .pid = pid_tgid >> 32, .goroutine = GO_G(ctx) };
	const volatile struct func_info *f;
	long ret = GO_RET0(ctx);
	struct call *call;
	__u64 len, id;

	call = bpf_map_lookup_elem(&go_calls, &key);
	if (!call)
		return 0;
	id = call->func;
	f = func_at(id);
	if (!f) {
		bpf_map_delete_elem(&go_calls, &key);
		return 0;
	}
	if (f->ret == RET_ERR_IFACE)
		ret = ret ? -1 : 0;
	len = moved(f, ret, 0);
	if (len || f->ret == RET_ERR_IFACE)
		emit_call(ctx, f, id, call, len, ret, how, true);
	bpf_map_delete_elem(&go_calls, &key);
	return 0;
}

SEC("uprobe")
int go_enter(struct pt_regs *ctx)
{
	return go_enter_body(ctx, 0);
}

SEC("uprobe")
int go_exit(struct pt_regs *ctx)
{
	return go_exit_body(ctx, SEND_BPF_LOOP);
}

/* Kernels without bpf_loop (or cookies). */
SEC("uprobe")
int go_exit_bounded(struct pt_regs *ctx)
{
	return go_exit_body(ctx, SEND_BOUNDED);
}
