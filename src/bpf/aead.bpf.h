/* SPDX-License-Identifier: GPL-2.0-only */
/* rustls over aws-lc (Deno, uv): every TLS record is sealed by EVP_AEAD_CTX_seal or
 * _seal_scatter, its plaintext their input (read at entry), and opened by
 * EVP_AEAD_CTX_open or _open_gather, its plaintext their output (read at return). The
 * record header is the additional data, and says what the record is:
 *  - 5 bytes 17 03 03 LEN: TLS 1.3, LEN being the plaintext's length and the 16-byte
 *    tag's. The real content type is the plaintext's last non-zero byte (zero padding
 *    may follow it): application data (23) is kept without its type and padding,
 *    handshake (22) and alerts are dropped.
 *  - 13 bytes (sequence, type, version, length): TLS 1.2, kept when the type is 23 and
 *    the length the plaintext's.
 *  - anything else (QUIC packets, WebCrypto) is not TLS traffic, and is dropped.
 * Every TLS cipher suite rustls and aws-lc-rs offer (AES-GCM, ChaCha20-Poly1305) has a
 * 16-byte tag.
 * A connection is named by the EVP_AEAD_CTX (one per direction); the AEAD calls do no
 * socket I/O, so the socket stays unknown ("-").
 *
 * Each function has its own entry program, so without cookies the function's index
 * comes from aead_funcs (user space fills it); the opens' return program reads it from
 * the call's state, which lives in task storage or, before 5.11, a hash by thread. A
 * record is at most 16 KiB: one chunk, sent without a loop. */
#ifndef AEAD_BPF_H
#define AEAD_BPF_H

#define TLS_APPLICATION_DATA 23
/* The last bytes of a TLS 1.3 plaintext searched for its content type: rustls pads
 * none; a record padded with more zeroes than this is dropped, never misread. */
#define TLS13_TAIL 32
/* An open that finds the thread inside another open, deeper on its stack, started this
 * recently, is the inner call of the same record (open calls open_gather). */
#define AEAD_NESTED_NS 1000000000ULL
#define AEAD_TAG_LEN 16

enum aad_kind {
	AAD_NONE = 0,
	AAD_TLS12 = 1,
	AAD_TLS13 = 2,
};

struct aead_call {
	struct call call; /* buf is the output */
	__u64 out_len;    /* EVP_AEAD_CTX_open: where it stores the length; 0 otherwise */
	__u64 len;        /* the plaintext's length as the input says (open_gather's in_len) */
	__u64 sp;         /* the stack pointer at the outermost open's entry */
	__u32 kind;       /* enum aad_kind */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct aead_call);
} aead_calls SEC(".maps");

/* The table indexes of seal, seal_scatter, open and open_gather, in that order. */
enum aead_fn {
	AEAD_SEAL,
	AEAD_SEAL_SCATTER,
	AEAD_OPEN,
	AEAD_OPEN_GATHER,
	AEAD_FNS,
};

const volatile __u32 aead_funcs[AEAD_FNS] = {};

/* The index of the function whose entry program `which` is running. */
static __always_inline __u32 aead_func(void *ctx, enum aead_fn which)
{
	return (__u32)cookie(ctx, aead_funcs[which]);
}

/* What the additional data of a record whose plaintext is `len` bytes says it is. */
static __always_inline __u32 aad_kind(__u64 ad, __u64 ad_len, __u64 len)
{
	__u8 b[13] = {};

	if (ad_len == 5) {
		if (bpf_probe_read_user(b, 5, (void *)ad))
			return AAD_NONE;
		if (b[0] != 0x17 || b[1] != 3 || b[2] != 3)
			return AAD_NONE;
		return ((__u64)b[3] << 8 | b[4]) == len + AEAD_TAG_LEN ? AAD_TLS13 : AAD_NONE;
	}
	if (ad_len == 13) {
		if (bpf_probe_read_user(b, 13, (void *)ad))
			return AAD_NONE;
		if (b[8] != TLS_APPLICATION_DATA || b[9] != 3)
			return AAD_NONE;
		return ((__u64)b[11] << 8 | b[12]) == len ? AAD_TLS12 : AAD_NONE;
	}
	return AAD_NONE;
}

/* The content length of a TLS 1.3 plaintext of `len` bytes at `buf` (before its type
 * and padding), or -1 when it is not application data. */
static __always_inline __s64 tls13_content(__u64 buf, __u64 len)
{
	__u8 tail[TLS13_TAIL] = {};
	__u64 n = len < TLS13_TAIL ? len : TLS13_TAIL;
	__u64 from = len - n;

	if (!n || bpf_probe_read_user(tail, n & (2 * TLS13_TAIL - 1), (void *)(buf + from)))
		return -1;
	for (int i = TLS13_TAIL - 1; i >= 0; i--) {
		if (i >= n || !tail[i])
			continue;
		return tail[i] == TLS_APPLICATION_DATA ? (__s64)(from + i) : -1;
	}
	return -1;
}

/* How many of the `len` plaintext bytes at `buf` are application data to report. */
static __always_inline __u64 record_content(__u32 kind, __u64 buf, __u64 len)
{
	__s64 n;

	if (kind == AAD_TLS12)
		return len;
	if (kind != AAD_TLS13)
		return 0;
	n = tls13_content(buf, len);
	return n > 0 ? n : 0;
}

/* Reports a record's plaintext seen at a seal's entry: the call is over when it starts. */
static __always_inline void aead_report(struct pt_regs *ctx, enum aead_fn which,
					__u64 aead_ctx, __u64 buf, __u64 len)
{
	__u32 id = aead_func(ctx, which);
	const volatile struct func_info *f = func_at(id);
	struct call call = {};

	if (!f || !len)
		return;
	call.buf = buf;
	call.tls_conn = aead_ctx;
	call.ts_ns = bpf_ktime_get_ns();
	call.conn.fd = -1;
	emit_call(ctx, f, id, &call, len, len, SEND_ONE_CHUNK, false);
}

/* Arguments past the sixth, as the x86-64 ABI passes them: on the stack, above the
 * return address. */
#define STACK_ARGS(ctx) ((void *)(PT_REGS_SP(ctx) + 8))

/* EVP_AEAD_CTX_seal(ctx, out, out_len, max_out_len, nonce, nonce_len | in, in_len, ad,
 * ad_len) */
SEC("uprobe")
int BPF_UPROBE(aead_seal, __u64 aead_ctx)
{
	__u64 st[4] = {};

	if (stopped || !wanted(bpf_get_current_pid_tgid()))
		return 0;
	if (bpf_probe_read_user(st, sizeof(st), STACK_ARGS(ctx)))
		return 0;
	aead_report(ctx, AEAD_SEAL, aead_ctx, st[0],
		    record_content(aad_kind(st[2], st[3], st[1]), st[0], st[1]));
	return 0;
}

/* EVP_AEAD_CTX_seal_scatter(ctx, out, out_tag, out_tag_len, max_out_tag_len, nonce |
 * nonce_len, in, in_len, extra_in, extra_in_len, ad, ad_len). A TLS 1.3 sealer may pass
 * the content type (and padding) as extra_in, apart from the content in `in`. */
SEC("uprobe")
int BPF_UPROBE(aead_seal_scatter, __u64 aead_ctx)
{
	__u64 st[7] = {};
	__u64 len;
	__u32 kind;

	if (stopped || !wanted(bpf_get_current_pid_tgid()))
		return 0;
	if (bpf_probe_read_user(st, sizeof(st), STACK_ARGS(ctx)))
		return 0;
	kind = aad_kind(st[5], st[6], st[2] + st[4]);
	if (kind == AAD_TLS13 && st[4])
		len = tls13_content(st[3], st[4]) == 0 ? st[2] : 0;
	else
		len = record_content(kind, st[1], st[2]);
	aead_report(ctx, AEAD_SEAL_SCATTER, aead_ctx, st[1], len);
	return 0;
}

/* An open's entry: the record's kind and where its plaintext of `len` bytes goes, unless
 * this is the inner call of an open already in flight on the thread. */
static __always_inline void open_enter(struct pt_regs *ctx, enum aead_fn which,
				       __u64 aead_ctx, __u64 out, __u64 out_len, __u64 len,
				       __u64 ad, __u64 ad_len)
{
	static const struct aead_call empty;
	__u64 sp = PT_REGS_SP(ctx), now = bpf_ktime_get_ns();
	struct aead_call *a;

	if (stopped || !wanted(bpf_get_current_pid_tgid()))
		return;
	a = thread_slot(&aead_calls, &empty, true);
	if (!a)
		return;
	if (a->call.active && sp < a->sp && now - a->call.ts_ns < AEAD_NESTED_NS)
		return;
	a->kind = aad_kind(ad, ad_len, len);
	a->call.active = a->kind != AAD_NONE;
	a->call.buf = out;
	a->call.tls_conn = aead_ctx;
	a->call.ts_ns = now;
	a->call.conn.fd = -1;
	a->call.conn.family = 0;
	a->call.func = aead_func(ctx, which);
	a->out_len = out_len;
	a->len = len;
	a->sp = sp;
}

/* EVP_AEAD_CTX_open(ctx, out, out_len, max_out_len, nonce, nonce_len | in, in_len, ad,
 * ad_len) */
SEC("uprobe")
int BPF_UPROBE(aead_open, __u64 aead_ctx, __u64 out, __u64 out_len)
{
	__u64 st[4] = {};

	if (!bpf_probe_read_user(st, sizeof(st), STACK_ARGS(ctx)))
		open_enter(ctx, AEAD_OPEN, aead_ctx, out, out_len, st[1] - AEAD_TAG_LEN, st[2],
			   st[3]);
	return 0;
}

/* EVP_AEAD_CTX_open_gather(ctx, out, nonce, nonce_len, in, in_len | in_tag, in_tag_len,
 * ad, ad_len): the plaintext is in_len bytes. */
SEC("uprobe")
int BPF_UPROBE(aead_open_gather, __u64 aead_ctx, __u64 out, __u64 nonce, __u64 nonce_len,
	       __u64 in, __u64 in_len)
{
	__u64 st[4] = {};

	if (!bpf_probe_read_user(st, sizeof(st), STACK_ARGS(ctx)))
		open_enter(ctx, AEAD_OPEN_GATHER, aead_ctx, out, 0, in_len, st[2], st[3]);
	return 0;
}

/* Either open's return. Only the outermost call's counts: its stack pointer is the one
 * at its entry, past the popped return address. */
SEC("uretprobe")
int BPF_URETPROBE(aead_open_exit, long ret)
{
	const volatile struct func_info *f;
	struct aead_call *a;
	__u64 len = 0;

	a = thread_slot(&aead_calls, 0, false);
	if (!a || !a->call.active || PT_REGS_SP(ctx) != a->sp + 8)
		return 0;
	f = func_at(a->call.func);
	if (f && (int)ret == 1) {
		if (a->out_len)
			bpf_probe_read_user(&len, sizeof(len), (void *)a->out_len);
		else
			len = a->len;
		len = record_content(a->kind, a->call.buf, len);
		if (len)
			emit_call(ctx, f, a->call.func, &a->call, len, len, SEND_ONE_CHUNK,
				  false);
	}
	end_call(&aead_calls, &a->call);
	return 0;
}

#endif
