//! The only reader of the kernel's record layouts: a raw ring-buffer record becomes a
//! size-checked `Record` or `Found` of domain types, or nothing. The kernel side is
//! trusted to be ours, but a record is still checked before it is believed: a bug there
//! must cost a dropped record, never a panic or a lie.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::skel::types::{conn, direction, event_hdr, found_event, found_kind};
use crate::event::{Call, Comm, Conn, Direction, Found, Record, Reveal};
use crate::libs;
use crate::procfs::FileId;

/// AF_INET and AF_INET6, as the socket ABI fixes them.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

pub(super) fn raw_direction(d: Direction) -> direction {
    match d {
        Direction::Read => direction::DIR_READ,
        Direction::Write => direction::DIR_WRITE,
        Direction::Handshake => direction::DIR_HANDSHAKE,
    }
}

fn conn_of(c: &conn) -> Conn {
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

/// Splits a raw record of the events ring into a checked `Record`, or None when it is
/// inconsistent.
pub fn decode(raw: &[u8]) -> Option<Record<'_>> {
    let mut hdr = event_hdr::default();
    plain::copy_from_bytes(&mut hdr, raw).ok()?;
    let payload = &raw[size_of::<event_hdr>()..];
    let n = hdr.chunk_len as usize;
    let (_, func) = libs::by_id(hdr.func)?;
    let dir = func.role.direction();
    let valid = n <= payload.len()
        && hdr.captured <= hdr.len
        && hdr.offset.checked_add(n as u64)? <= hdr.captured
        && hdr.ts_ns.checked_add(hdr.latency_ns).is_some()
        && raw_direction(dir) == hdr.dir;
    valid.then(|| Record {
        call: Call {
            direction: dir,
            func,
            pid: hdr.pid,
            tid: hdr.tid,
            uid: hdr.uid,
            comm: Comm::from_raw(hdr.comm.map(|c| c as u8)),
            start_ns: hdr.ts_ns,
            latency_ns: hdr.latency_ns,
            len: hdr.len,
            captured: hdr.captured,
            ret: hdr.ret,
            tls_conn: hdr.tls_conn,
            cgroup_id: hdr.cgroup_id,
            conn: conn_of(&hdr.conn),
        },
        offset: hdr.offset,
        chunk: &payload[..n],
    })
}

/// A record of the ring of files found, or None when it is not one.
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

#[cfg(test)]
pub mod testing {
    //! Raw records built by hand, as the kernel would send them.
    use super::*;
    use crate::libs::all_funcs;

    /// A record's header, without its payload.
    pub struct Header(event_hdr);

    impl Header {
        /// A call of `func` on thread `tid`, entered at `ts_ns`, that moved `len` bytes.
        pub fn new(tid: u32, ts_ns: u64, len: u64, func: &str) -> Header {
            let (id, _, f) = all_funcs().find(|(_, _, f)| f.name == func).unwrap();
            let mut h = event_hdr {
                ts_ns,
                len,
                captured: len,
                pid: 1,
                tid,
                func: id,
                dir: raw_direction(f.role.direction()),
                ..Default::default()
            };
            h.conn.fd = -1;
            Header(h)
        }

        pub fn captured(mut self, captured: u64) -> Header {
            self.0.captured = captured;
            self
        }

        pub fn latency(mut self, ns: u64) -> Header {
            self.0.latency_ns = ns;
            self
        }

        pub fn ret(mut self, ret: i64) -> Header {
            self.0.ret = ret;
            self
        }

        pub fn pid(mut self, pid: u32) -> Header {
            self.0.pid = pid;
            self
        }

        /// The record of the chunk at `offset`.
        pub fn record(&self, offset: u64, data: &[u8]) -> Vec<u8> {
            let mut h = self.0;
            h.offset = offset;
            h.chunk_len = data.len() as u32;
            // SAFETY: event_hdr is plain data; viewing it as bytes is what the kernel
            // sends.
            let bytes = unsafe { plain::as_bytes(&h) };
            [bytes, data].concat()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Header;
    use super::*;

    #[test]
    fn connection_addresses_decode_for_both_families() {
        let mut c = conn {
            fd: 7,
            family: AF_INET,
            lport: 5000,
            rport: 443,
            ..Default::default()
        };
        c.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        c.raddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        let decoded = conn_of(&c);
        assert_eq!(decoded.fd, Some(7));
        assert_eq!(decoded.local.unwrap().to_string(), "127.0.0.1:5000");
        assert_eq!(decoded.remote.unwrap().to_string(), "10.1.2.3:443");

        c.family = AF_INET6;
        c.raddr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(conn_of(&c).remote.unwrap().to_string(), "[::1]:443");

        c.family = 0;
        c.fd = -1;
        assert_eq!(conn_of(&c), Conn::default());
    }

    #[test]
    fn records_are_checked_before_they_are_trusted() {
        let h = Header::new(10, 1, 4, "SSL_read");
        let good = h.record(0, b"abcd");
        let r = decode(&good).unwrap();
        assert_eq!(
            (r.call.direction, r.call.func.name, r.chunk),
            (Direction::Read, "SSL_read", &b"abcd"[..])
        );
        // More payload than the record holds.
        let mut short = h.record(0, b"abcd");
        short.truncate(short.len() - 1);
        assert!(decode(&short).is_none());
        assert!(decode(b"short").is_none());
        // Past the captured length.
        assert!(decode(&h.record(4, b"x")).is_none());
    }

    #[test]
    fn records_of_unknown_functions_or_the_wrong_direction_are_dropped() {
        let raw = Header::new(10, 1, 4, "SSL_read").record(0, b"");
        let mut hdr = event_hdr::default();
        plain::copy_from_bytes(&mut hdr, &raw).unwrap();
        let as_raw = |h: &event_hdr| {
            // SAFETY: event_hdr is plain data.
            unsafe { plain::as_bytes(h) }.to_vec()
        };
        let mut unknown = hdr;
        unknown.func = 1000;
        assert!(decode(&as_raw(&unknown)).is_none());
        let mut wrong = hdr;
        wrong.dir = direction::DIR_WRITE;
        assert!(decode(&as_raw(&wrong)).is_none());
    }

    #[test]
    fn comm_stops_at_the_first_nul() {
        let raw = Header::new(1, 1, 0, "SSL_read").record(0, b"");
        let mut hdr = event_hdr::default();
        plain::copy_from_bytes(&mut hdr, &raw).unwrap();
        for (d, s) in hdr.comm.iter_mut().zip(b"a\x1bb\0junk") {
            *d = *s as i8;
        }
        // SAFETY: event_hdr is plain data.
        let raw = unsafe { plain::as_bytes(&hdr) }.to_vec();
        assert_eq!(decode(&raw).unwrap().call.comm.bytes(), b"a\x1bb");
    }
}
