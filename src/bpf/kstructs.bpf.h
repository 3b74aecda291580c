/* SPDX-License-Identifier: GPL-2.0-only */
/* The kernel's structures, only the fields read here: CO-RE finds each in the running
 * kernel's layout, so no vmlinux.h is needed and nothing is assumed of field offsets. */

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

struct mm_struct {
	struct file *exe_file;
} __attribute__((preserve_access_index));

struct task_struct {
	struct files_struct *files;
	struct mm_struct *mm;
	struct task_struct *group_leader;
	__u64 start_time;
} __attribute__((preserve_access_index));

/* A file's identity as user space's FileId has it. */
static __always_inline struct file_id file_id_of(struct file *file)
{
	struct file_id id;

	id.ino = BPF_CORE_READ(file, f_inode, i_ino);
	id.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	return id;
}
