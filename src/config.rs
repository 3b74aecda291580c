//! What the user asked for, in the terms the tracer needs.

pub struct Config {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub comm: Option<String>,
    pub max_capture: u64,
    pub ring_size: u32,
    pub handshake: bool,
    /// Attribute calls to sockets (fd, addresses): a hook on every syscall.
    pub conn: bool,
    /// Flush after every drain rather than every 100 ms (a terminal is reading).
    pub interactive: bool,
    pub debug: bool,
}

/// The kernel keeps this many bytes of a command name (TASK_COMM_LEN less its NUL).
pub const COMM_LEN: usize = 15;
