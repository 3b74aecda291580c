/* SPDX-License-Identifier: GPL-2.0-only */
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
	id = file_id_of(file);
	if (bpf_map_lookup_elem(&seen_files, &id))
		return;
	e = bpf_ringbuf_reserve(&found, sizeof(*e), 0);
	if (!e) {
		COUNT(unreported_files, 1);
		return;
	}
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
 * can learn the tracepoint's id (tracefs) and the kernel has bpf_task_pt_regs (5.15),
 * and follow_mmap otherwise. */
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

/* Kernels without task storage: a thread that dies inside a call (killed, or exiting
 * from a callback) gives its slots back here, and its watch of memory-fed connections
 * (kept for the thread's life). Attached only then. */
SEC("raw_tp/sched_process_exit")
int thread_exit(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&calls, &tid);
	bpf_map_delete_elem(&handshakes, &tid);
	bpf_map_delete_elem(&aead_calls, &tid);
	bpf_map_delete_elem(&bio_watches, &tid);
	return 0;
}
