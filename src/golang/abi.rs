//! What the probes of a Go function read. Go's internal register ABI (`ABIInternal`: Go
//! 1.17+ on amd64, 1.18+ on arm64) puts the receiver and the buffer in RAX, RBX, RCX
//! (arm64: X0-X2) at entry, the count in RAX (X0) and the error in RBX:RCX (X1:X2) at a
//! Read/Write return, a handshake's error in RAX:RBX (X0:X1), and the goroutine in R14
//! (X28) throughout; the BPF side (`go_enter`, `go_exit`) reads them there.
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

/// Struct layouts by Go minor release, first and last: every release from 1.17 to 1.27
/// puts the fields at the same offsets; the hash of `*net.TCPConn` changed with the
/// compiler's type hash (MD5, then inverted SHA-256 from 1.19, SHA-256 bytes 8-11 in 1.24,
/// inverted first byte from 1.25). Each entry is checked against a real build of each
/// release in it (`fixture_tests`): DWARF for the releases Debian builds, the type
/// descriptors the executable carries for those the registries ship. Never guessed.
static FD_PATHS: &[(u32, u32, FdPath)] = &[
    (17, 18, layout(0xb954_d952)),
    (19, 23, layout(0xbc02_0cb9)),
    (24, 24, layout(0x425e_a6e6)),
    (25, 27, layout(0x43fd_f3b9)),
];

const fn layout(tcp_conn_hash: u32) -> FdPath {
    FdPath {
        conn: 0,
        itab_hash: 16,
        tcp_conn_hash,
        tcp_conn_fd: 0,
        netfd_sysfd: 16,
    }
}

/// Every known layout, in a fixed order (the BPF side's table).
pub fn fd_paths() -> impl Iterator<Item = &'static FdPath> {
    FD_PATHS.iter().map(|(_, _, path)| path)
}

pub fn fd_path(minor: u32) -> Option<&'static FdPath> {
    FD_PATHS
        .iter()
        .find(|(first, last, _)| (*first..=*last).contains(&minor))
        .map(|(_, _, path)| path)
}

/// The releases with a layout.
#[cfg(test)]
pub fn fd_path_releases() -> impl Iterator<Item = u32> {
    FD_PATHS.iter().flat_map(|(first, last, _)| *first..=*last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// That every layout has a slot on the BPF side is kernel::load's test.
    #[test]
    fn each_release_has_one_layout() {
        let releases: Vec<u32> = fd_path_releases().collect();
        assert_eq!(releases, (17..=27).collect::<Vec<_>>());
        assert_eq!(fd_path(16), None);
        assert_eq!(fd_path(28), None);
        assert_eq!(fd_path(21).map(|p| p.tcp_conn_hash), Some(0xbc02_0cb9));
    }
}
