//! What the user asked for, in the terms the tracer needs.

use crate::libs::Library;

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
    /// Decode HTTP/1 and HTTP/2 (`--http auto`).
    pub http: bool,
    /// Attach to files that processes start or map while running.
    pub follow: bool,
    /// The libraries traced (those not turned off).
    pub libraries: Vec<&'static Library>,
}

/// The kernel keeps this many bytes of a command name (TASK_COMM_LEN less its NUL).
pub const COMM_LEN: usize = 15;
