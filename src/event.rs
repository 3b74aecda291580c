//! What the kernel saw, as domain types: calls, their records and whole events, and the
//! files it found. `kernel::record` makes them from the kernel's structs; everything
//! downstream (assembly, protocols, outputs) sees only these.

use std::net::SocketAddr;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;

use crate::cgroup::Cgroup;
use crate::libs::Func;
use crate::procfs::FileId;

pub use crate::libs::Direction;

/// A command name as the kernel keeps it: up to 15 bytes, chosen by the traced program,
/// so hostile. Outputs escape it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Comm([u8; 16]);

impl Comm {
    pub fn from_raw(raw: [u8; 16]) -> Comm {
        Comm(raw)
    }

    pub fn bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        &self.0[..end]
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn new(name: &[u8]) -> Comm {
        let mut c = [0; 16];
        let n = name.len().min(15);
        c[..n].copy_from_slice(&name[..n]);
        Comm(c)
    }
}

/// The socket under a call, when connection tracking saw it: the one the call did I/O
/// on, or for an object fed through memory, the one it was tied to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conn {
    pub fd: Option<i32>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

/// One TLS call as the kernel saw it at return, without its payload.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub direction: Direction,
    pub func: &'static Func,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: Comm,
    /// CLOCK_MONOTONIC at entry.
    pub start_ns: u64,
    pub latency_ns: u64,
    /// Bytes the call moved.
    pub len: u64,
    /// Bytes of it the kernel captured: `len` up to --max-buffer-size.
    pub captured: u64,
    /// The raw return value.
    pub ret: i64,
    /// The library's connection object (SSL *, session, PRFileDesc *): names the TLS
    /// connection when no socket is known.
    pub tls_conn: u64,
    /// The thread's cgroup in the cgroup v2 hierarchy: its directory's inode.
    pub cgroup_id: u64,
    pub conn: Conn,
}

impl Call {
    pub fn end_ns(&self) -> u64 {
        self.start_ns + self.latency_ns
    }
}

/// One ring-buffer record: a chunk of a call's captured bytes starting at `offset`. An
/// empty chunk short of `captured` says the rest of the call will not come.
#[derive(Debug)]
pub struct Record<'a> {
    pub call: Call,
    pub offset: u64,
    pub chunk: &'a [u8],
}

impl Record<'_> {
    /// The kernel could not deliver the bytes from `offset` on.
    pub fn ends_short(&self) -> bool {
        self.chunk.is_empty() && self.offset < self.call.captured
    }
}

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Done,
    Failed,
    /// Returned a would-block-or-error value and no success followed in time.
    NotCompleted,
}

impl Handshake {
    /// The name used in structured output.
    pub fn name(self) -> &'static str {
        match self {
            Handshake::Done => "done",
            Handshake::Failed => "failed",
            Handshake::NotCompleted => "not_completed",
        }
    }
}

/// A call's payload: borrowed from its ring record when it came in one, or its records
/// put together, which every output then writes from where it is, without a copy of
/// its own (`output::Batch`).
#[derive(Debug, Clone)]
pub enum Payload<'a> {
    Borrowed(&'a [u8]),
    Shared(Arc<Vec<u8>>),
}

impl Payload<'_> {
    /// The payload, when outputs can hold on to it past the event.
    pub fn shared(&self) -> Option<&Arc<Vec<u8>>> {
        match self {
            Payload::Shared(data) => Some(data),
            Payload::Borrowed(_) => None,
        }
    }
}

impl Deref for Payload<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Borrowed(data) => data,
            Payload::Shared(data) => data,
        }
    }
}

/// One TLS call, whole: what the outputs print.
#[derive(Debug)]
pub struct Event<'a> {
    pub call: Call,
    pub data: Payload<'a>,
    /// Captured bytes that are not in `data`: the ring buffer was full, or (as one
    /// output shows the call) that output fell behind.
    pub undelivered: u64,
    pub handshake: Option<Handshake>,
    /// The call's cgroup, when its path is known (set after assembly).
    pub cgroup: Option<Rc<Cgroup>>,
}

impl Event<'_> {
    /// The call as an output that had no room for its payload shows it: no payload, its
    /// bytes undelivered.
    pub fn without_payload(&self) -> Event<'static> {
        Event {
            call: self.call,
            data: Payload::Borrowed(&[]),
            undelivered: self.undelivered + self.data.len() as u64,
            handshake: self.handshake,
            cgroup: self.cgroup.clone(),
        }
    }

    /// Bytes beyond --max-buffer-size, never captured.
    pub fn truncated(&self) -> u64 {
        self.call.len - self.call.captured
    }
}

/// A process revealed a file that was never examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    /// It started: the file is its executable.
    Exec,
    /// It mapped the file executable (the loader, dlopen).
    Mmap,
}

#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub reveal: Reveal,
    pub pid: u32,
    pub file: FileId,
    /// CLOCK_MONOTONIC when it happened.
    pub ts_ns: u64,
}

// For the unit tests here and the bench's (the `testing` feature, which its tests turn on).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    //! Calls and events built by hand, for the tests of what consumes them.
    use super::*;
    use crate::libs::all_funcs;

    /// A call of `func` that moved `data`.
    pub fn call(func: &str, data: &[u8]) -> Call {
        let (_, _, f) = all_funcs().find(|(_, _, f)| f.name == func).unwrap();
        Call {
            direction: f.role.direction(),
            func: f,
            pid: 42,
            tid: 43,
            uid: 1000,
            comm: Comm::new(b"curl"),
            start_ns: 5_000_000_000,
            latency_ns: 1_500_000,
            len: data.len() as u64,
            captured: data.len() as u64,
            ret: 0,
            tls_conn: 0,
            cgroup_id: 1,
            conn: Conn::default(),
        }
    }

    pub fn event<'a>(func: &str, data: &'a [u8]) -> Event<'a> {
        Event {
            call: call(func, data),
            data: Payload::Borrowed(data),
            undelivered: 0,
            handshake: None,
            cgroup: None,
        }
    }
}
