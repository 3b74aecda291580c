//! The decoder: the only reader of the BPF record layout. It turns a raw ring-buffer
//! record into a size-checked `Record` of domain types; everything downstream (assembly,
//! protocols, outputs) sees `Call`s and `Event`s, never the kernel's structs.

use std::borrow::Cow;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bpf::types::{conn, direction, event_hdr, found_event, found_kind};
use crate::libs::{self, Func};
use crate::proto::Http;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Read,
    Write,
    Handshake,
}

impl Direction {
    /// The name used in structured output.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Read => "read",
            Direction::Write => "write",
            Direction::Handshake => "handshake",
        }
    }

    fn from_raw(d: direction) -> Option<Direction> {
        match d {
            direction::DIR_READ => Some(Direction::Read),
            direction::DIR_WRITE => Some(Direction::Write),
            direction::DIR_HANDSHAKE => Some(Direction::Handshake),
            _ => None,
        }
    }
}

/// A command name as the kernel keeps it: up to 15 bytes, chosen by the traced program,
/// so hostile. Outputs escape it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Comm([u8; 16]);

impl Comm {
    pub fn bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        &self.0[..end]
    }

    #[cfg(test)]
    pub fn new(name: &[u8]) -> Comm {
        let mut c = [0; 16];
        let n = name.len().min(15);
        c[..n].copy_from_slice(&name[..n]);
        Comm(c)
    }
}

/// The socket under a call, when connection tracking saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conn {
    pub fd: Option<i32>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

/// AF_INET and AF_INET6, as the socket ABI fixes them.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

impl Conn {
    fn from_raw(c: &conn) -> Conn {
        let ip = |raw: &[u8; 16]| match c.family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
            _ => None,
        };
        Conn {
            fd: (c.fd >= 0).then_some(c.fd),
            local: ip(&c.laddr).map(|ip| SocketAddr::new(ip, c.lport)),
            remote: ip(&c.raddr).map(|ip| SocketAddr::new(ip, c.rport)),
        }
    }
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

/// One TLS call, whole: what the outputs print.
#[derive(Debug)]
pub struct Event<'a> {
    pub call: Call,
    pub data: Cow<'a, [u8]>,
    /// Captured bytes the kernel could not deliver (ring buffer full).
    pub undelivered: u64,
    pub handshake: Option<Handshake>,
    /// What the call carried as HTTP, when the protocol stage recognised it.
    pub http: Option<Http>,
}

impl Event<'_> {
    /// Bytes beyond --max-buffer-size, never captured.
    pub fn truncated(&self) -> u64 {
        self.call.len - self.call.captured
    }
}

/// A file as the kernel names it: superblock device (kernel encoding) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// From stat(2)'s device number, whose encoding differs from the kernel's.
    pub fn from_stat(st_dev: u64, ino: u64) -> FileId {
        let (major, minor) = (libc::major(st_dev) as u64, libc::minor(st_dev) as u64);
        FileId::from_major_minor(major, minor, ino)
    }

    pub fn from_major_minor(major: u64, minor: u64, ino: u64) -> FileId {
        FileId {
            dev: (major << 20) | minor,
            ino,
        }
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

/// A record of the `found` ring, or None when it is not one.
pub fn decode_found(raw: &[u8]) -> Option<Found> {
    let mut e = found_event::default();
    plain::copy_from_bytes(&mut e, raw).ok()?;
    let reveal = match e.kind {
        found_kind::FOUND_EXEC => Reveal::Exec,
        found_kind::FOUND_MMAP => Reveal::Mmap,
        _ => return None,
    };
    Some(Found {
        reveal,
        pid: e.pid,
        file: FileId {
            dev: e.file.dev,
            ino: e.file.ino,
        },
        ts_ns: e.ts_ns,
    })
}

/// Splits a raw record into a checked `Record`, or None when it is inconsistent.
pub fn decode(raw: &[u8]) -> Option<Record<'_>> {
    let mut hdr = event_hdr::default();
    plain::copy_from_bytes(&mut hdr, raw).ok()?;
    let payload = &raw[size_of::<event_hdr>()..];
    let n = hdr.chunk_len as usize;
    let dir = Direction::from_raw(hdr.dir)?;
    let (_, func) = libs::by_id(hdr.func)?;
    let valid = n <= payload.len()
        && hdr.captured <= hdr.len
        && hdr.offset.checked_add(n as u64)? <= hdr.captured
        && hdr.ts_ns.checked_add(hdr.latency_ns).is_some()
        && func.role.direction() == hdr.dir;
    let comm = Comm(hdr.comm.map(|c| c as u8));
    valid.then(|| Record {
        call: Call {
            direction: dir,
            func,
            pid: hdr.pid,
            tid: hdr.tid,
            uid: hdr.uid,
            comm,
            start_ns: hdr.ts_ns,
            latency_ns: hdr.latency_ns,
            len: hdr.len,
            captured: hdr.captured,
            ret: hdr.ret,
            tls_conn: hdr.tls_conn,
            conn: Conn::from_raw(&hdr.conn),
        },
        offset: hdr.offset,
        chunk: &payload[..n],
    })
}

#[cfg(test)]
pub mod testing {
    //! Raw records and calls built by hand, for the decoder's and its users' tests.
    use super::*;
    use crate::libs::all_funcs;

    pub fn func_id(name: &str) -> u32 {
        all_funcs().find(|(_, _, f)| f.name == name).unwrap().0
    }

    pub fn hdr(tid: u32, ts_ns: u64, len: u64, func: &str) -> event_hdr {
        let id = func_id(func);
        let (_, f) = libs::by_id(id).unwrap();
        let mut h = event_hdr {
            ts_ns,
            len,
            captured: len,
            pid: 1,
            tid,
            func: id,
            dir: f.role.direction(),
            ..Default::default()
        };
        h.conn.fd = -1;
        h
    }

    pub fn record(mut h: event_hdr, offset: u64, data: &[u8]) -> Vec<u8> {
        h.offset = offset;
        h.chunk_len = data.len() as u32;
        // SAFETY: event_hdr is plain data; viewing it as bytes is what the kernel sends.
        let bytes = unsafe { plain::as_bytes(&h) };
        [bytes, data].concat()
    }

    /// A call of `func` that moved `data`, as the decoder would produce it.
    pub fn call(func: &str, data: &[u8]) -> Call {
        let raw = record(hdr(43, 5_000_000_000, data.len() as u64, func), 0, b"");
        let mut call = decode(&raw).unwrap().call;
        call.pid = 42;
        call.uid = 1000;
        call.latency_ns = 1_500_000;
        call.comm = Comm::new(b"curl");
        call
    }

    pub fn event<'a>(func: &str, data: &'a [u8]) -> Event<'a> {
        Event {
            call: call(func, data),
            data: Cow::Borrowed(data),
            undelivered: 0,
            handshake: None,
            http: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn connection_addresses_decode_for_both_families() {
        let mut h = hdr(1, 1, 1, "SSL_read");
        h.conn.fd = 7;
        h.conn.family = AF_INET;
        h.conn.lport = 5000;
        h.conn.rport = 443;
        h.conn.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        h.conn.raddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        let c = Conn::from_raw(&h.conn);
        assert_eq!(c.fd, Some(7));
        assert_eq!(c.local.unwrap().to_string(), "127.0.0.1:5000");
        assert_eq!(c.remote.unwrap().to_string(), "10.1.2.3:443");

        h.conn.family = AF_INET6;
        h.conn.raddr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(
            Conn::from_raw(&h.conn).remote.unwrap().to_string(),
            "[::1]:443"
        );

        h.conn.family = 0;
        h.conn.fd = -1;
        assert_eq!(Conn::from_raw(&h.conn), Conn::default());
    }

    #[test]
    fn records_are_checked_before_they_are_trusted() {
        let h = hdr(10, 1, 4, "SSL_read");
        let good = record(h, 0, b"abcd");
        let r = decode(&good).unwrap();
        assert_eq!(
            (r.call.direction, r.call.func.name, r.chunk),
            (Direction::Read, "SSL_read", &b"abcd"[..])
        );
        // More payload than the record holds.
        let mut bad = h;
        bad.chunk_len = 100;
        // SAFETY: as in record().
        let short = [unsafe { plain::as_bytes(&bad) }, b"abcd"].concat();
        assert!(decode(&short).is_none());
        assert!(decode(b"short").is_none());
        // Past the captured length; a function that is not in the table; a direction
        // that does not match the function.
        assert!(decode(&record(h, 4, b"x")).is_none());
        let mut unknown = h;
        unknown.func = 1000;
        assert!(decode(&record(unknown, 0, b"")).is_none());
        let mut wrong = h;
        wrong.dir = direction::DIR_WRITE;
        assert!(decode(&record(wrong, 0, b"")).is_none());
    }

    #[test]
    fn comm_stops_at_the_first_nul() {
        let mut h = hdr(1, 1, 0, "SSL_read");
        for (d, s) in h.comm.iter_mut().zip(b"a\x1bb\0junk") {
            *d = *s as i8;
        }
        let r = record(h, 0, b"");
        assert_eq!(decode(&r).unwrap().call.comm.bytes(), b"a\x1bb");
    }
}
