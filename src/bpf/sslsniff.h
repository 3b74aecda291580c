/* SPDX-License-Identifier: GPL-2.0-only */
/* The one definition of what crosses from the kernel to user space. Rust reads these
 * types through the generated skeleton, so there is no second copy to keep in sync. */
#ifndef SSLSNIFF_H
#define SSLSNIFF_H

#define TASK_COMM_LEN 16
/* One ring-buffer record (struct event_hdr, then chunk_len payload bytes) carries at most
 * chunk_size bytes of payload (see the BPF side), never more than this; a larger call is
 * sent as consecutive chunks. A record without payload at an offset short of `captured`
 * says the rest of the call was lost. */
#define MAX_CHUNK_SIZE 16384

/* Probes carry their function's index in the table below as their cookie, so one entry
 * program and one return program serve every library. */
#define MAX_FUNCS 64

/* Kernels without probe cookies (before 5.15) get one program per function instead,
 * for the first MAX_FIXED_FUNCS functions of the table (generated in sslsniff.bpf.c). */
#define MAX_FIXED_FUNCS 32

/* Kernels without bpf_loop (before 5.17) send a call's records in a bounded loop: at
 * most this many records, so at most this many chunks of a call are captured. */
#define MAX_BOUNDED_CHUNKS 64

enum direction {
	DIR_READ = 0,
	DIR_WRITE = 1,
	DIR_HANDSHAKE = 2,
};

/* How a probed function's return value says what it did. */
enum ret_convention {
	RET_COUNT = 0, /* ret > 0 is the byte count */
	RET_EX = 1,    /* ret == 1 is success; the byte count is behind the 4th argument */
	RET_RAW = 2,   /* handshake: the raw return value goes to user space */
	RET_ERR_IFACE = 3, /* Go handshake: the return register is an error's first word, 0
			    * when nil; user space gets 0 (success) or -1 */
};

/* C probes: a probe cookie's bit 32 says that the probe's file also has the probes that
 * end a connection object's tie to its socket (its free, see conn.bpf.h): only then
 * may the object's calls learn a tie. */
#define COOKIE_TIES (1ULL << 32)

/* Go programs: how to reach the socket descriptor from a *crypto/tls.Conn, for one Go
 * release's struct layout (see src/golang/abi.rs). A Go probe's cookie carries the
 * index of its program's layout + 1 in its upper 32 bits, 0 when unknown. */
#define MAX_GO_FD_PATHS 8

struct go_fd_path {
	__u64 conn;          /* tls.Conn.conn: the net.Conn interface */
	__u64 itab_hash;     /* runtime.itab.hash */
	__u64 tcp_conn_fd;   /* *net.TCPConn -> *net.netFD */
	__u64 netfd_sysfd;   /* netFD -> poll.FD.Sysfd */
	__u32 tcp_conn_hash; /* the hash when the interface holds a *net.TCPConn */
	__u32 pad;
};

/* What the BPF side must know of a probed function; user space fills one per function. */
struct func_info {
	enum direction dir;
	enum ret_convention ret;
	/* 16 bytes in all: the table is indexed by a shift. */
	__u16 nspr_fd; /* first argument is a PRFileDesc: skip descriptors without TLS */
	__u16 ret_int; /* returns a C int: only the low 32 bits of the register are defined */
	__u16 untie;   /* the library's objects may be tied to a socket (see COOKIE_TIES) */
	__u16 pad;
};

/* The socket under a call, seen from inside it, or for a connection object fed through
 * memory (node, asyncio) the socket it was tied to (a syscall hook, only with connection
 * tracking on: conn.bpf.h). */
struct conn {
	__s32 fd;       /* -1: no socket syscall was seen (data served from the library's buffer) */
	__u16 family;   /* AF_INET, AF_INET6, or 0: addresses unknown */
	__u16 lport;    /* host byte order */
	__u16 rport;    /* host byte order */
	__u16 pad;      /* explicit, so that no byte of the record is left unset */
	__u8 laddr[16]; /* IPv4 in the first 4 bytes */
	__u8 raddr[16];
};

struct event_hdr {
	__u64 ts_ns;      /* CLOCK_MONOTONIC at function entry */
	__u64 latency_ns; /* entry to return */
	__u64 len;        /* bytes the call moved */
	__u64 captured;   /* bytes that will be sent for this call: min(len, limit) */
	__u64 offset;     /* where this chunk starts within the call */
	__s64 ret;        /* raw return value */
	__u64 tls_conn;   /* first argument (SSL *, session, PRFileDesc *): names the TLS connection */
	__u64 cgroup_id;  /* the thread's cgroup in the cgroup v2 hierarchy (its directory's inode) */
	__u32 chunk_len;  /* payload bytes in this record */
	__u32 func;       /* index into user space's function table */
	__u32 pid;
	__u32 tid;
	__u32 uid;
	enum direction dir;
	char comm[TASK_COMM_LEN];
	struct conn conn;
};

/* Following the machine: a program started (exec) or mapped an executable file that
 * user space has not examined yet. */
enum found_kind {
	FOUND_EXEC = 0,
	FOUND_MMAP = 1,
};

/* A file as the kernel names it: superblock device (kernel encoding) and inode. */
struct file_id {
	__u64 dev;
	__u64 ino;
};

struct found_event {
	__u64 ts_ns; /* CLOCK_MONOTONIC when it happened */
	struct file_id file;
	__u32 pid;
	enum found_kind kind;
};

/* Per-CPU counters of what the kernel side saw and could not deliver. */
struct stats {
	__u64 calls;            /* successful calls that passed the filters */
	__u64 lost_records;     /* ring-buffer records that did not fit */
	__u64 undelivered_bytes; /* captured bytes that could not be sent */
	/* Of those, bytes of calls whose end-of-call record did not fit either: user space
	 * never hears of these calls, so only this counter reports them. */
	__u64 unannounced_bytes;
	/* Calls not traced because the per-thread table of kernels without task storage
	 * was full. */
	__u64 untracked_calls;
	/* Files the kernel found but could not report (the ring of files found was full):
	 * they are reported again at their next exec or mapping. */
	__u64 unreported_files;
};

#endif
