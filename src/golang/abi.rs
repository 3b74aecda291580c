//! Where Go's internal register ABI (`ABIInternal`: Go 1.17+ on amd64, 1.18+ on arm64)
//! puts what the probes read, for the BPF side. Registers are named as the kernel's
//! `pt_regs` calls them (x86-64 `ax`..., arm64 `regs[n]`).
//!
//! Integer arguments and results take registers in order; a slice takes three (pointer,
//! length, capacity), an interface two (type or itab word, data word), so a nil error is a
//! zero first word. Results are in registers at every `RET`; the stack is used only past
//! 9 integer registers on amd64 and 16 on arm64, which no probed function reaches.

/// What a probed function is, and so which values its probes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `func (c *Conn) Write(b []byte) (int, error)`: plaintext sent.
    Write,
    /// `func (c *Conn) Read(b []byte) (int, error)`: plaintext received.
    Read,
    /// `func (c *Conn) clientHandshake/serverHandshake(ctx context.Context) error`: entered
    /// and returned once per handshake.
    Handshake,
}

/// Registers, for one architecture.
#[derive(Debug, PartialEq, Eq)]
pub struct RegAbi {
    /// At every entry: the receiver, `*crypto/tls.Conn`.
    pub conn: &'static str,
    /// At Read/Write entry: `b`'s data pointer and length.
    pub buf_ptr: &'static str,
    pub buf_len: &'static str,
    /// At a Read/Write return: the count `n`, then `err`'s first word (nil when zero) and
    /// second word.
    pub ret_n: &'static str,
    pub ret_err: &'static str,
    pub ret_err_data: &'static str,
    /// At a handshake return: `err`'s first word (nil when zero), second word.
    pub handshake_err: &'static str,
    pub handshake_err_data: &'static str,
    /// Always: the current goroutine (`runtime.g`), the key that ties a return to its
    /// entry. Not the thread: a goroutine may move to another thread inside a call.
    pub goroutine: &'static str,
}

pub const AMD64: RegAbi = RegAbi {
    conn: "ax",
    buf_ptr: "bx",
    buf_len: "cx",
    ret_n: "ax",
    ret_err: "bx",
    ret_err_data: "cx",
    handshake_err: "ax",
    handshake_err_data: "bx",
    goroutine: "r14",
};

pub const ARM64: RegAbi = RegAbi {
    conn: "regs[0]",
    buf_ptr: "regs[1]",
    buf_len: "regs[2]",
    ret_n: "regs[0]",
    ret_err: "regs[1]",
    ret_err_data: "regs[2]",
    handshake_err: "regs[0]",
    handshake_err_data: "regs[1]",
    goroutine: "regs[28]",
};

/// How to reach the socket descriptor from the receiver `*crypto/tls.Conn`, when its
/// `net.Conn` holds a `*net.TCPConn`; byte offsets. The BPF side reads, with `c` the
/// receiver: `tab = *(c + conn)`, `data = *(c + conn + 8)`; only if
/// `*(u32 *)(tab + itab_hash) == tcp_conn_hash` (any other `net.Conn`, a wrapper or a
/// pipe, has no descriptor there), `fd = *(s64 *)(*(data + tcp_conn_fd) + netfd_sysfd)`.
#[derive(Debug, PartialEq, Eq)]
pub struct FdPath {
    /// `crypto/tls.Conn.conn`: the `net.Conn` interface (itab word, data word).
    pub conn: u64,
    /// `runtime.itab.hash`: the hash of the interface's dynamic type.
    pub itab_hash: u64,
    /// That hash when the dynamic type is `*net.TCPConn`.
    pub tcp_conn_hash: u32,
    /// `net.TCPConn.conn` + `net.conn.fd`: the `*net.netFD`.
    pub tcp_conn_fd: u64,
    /// `net.netFD.pfd` + `internal/poll.FD.Sysfd`: the descriptor, a Go `int` (8 bytes).
    pub netfd_sysfd: u64,
}

/// Struct layouts by Go minor release, each entry checked against the DWARF and itab of
/// a real build of that release (`fixture_tests`): never guessed. Releases not listed
/// get no descriptor; only Go 1.19 can be built here.
const FD_PATHS: &[(u32, FdPath)] = &[(
    19,
    FdPath {
        conn: 0,
        itab_hash: 16,
        tcp_conn_hash: 0xbc02_0cb9,
        tcp_conn_fd: 0,
        netfd_sysfd: 16,
    },
)];

pub fn fd_path(minor: u32) -> Option<&'static FdPath> {
    FD_PATHS
        .iter()
        .find(|(m, _)| *m == minor)
        .map(|(_, path)| path)
}

#[cfg(test)]
pub fn fd_path_releases() -> impl Iterator<Item = u32> {
    FD_PATHS.iter().map(|(minor, _)| *minor)
}
