//! bcc sslsniff's layout: a header, one row per call, then the payload between DATA
//! markers, as terminal-safe text or `hexdump -C` rows.

use std::io::{self, Write};

use super::hexdump::hexdump;
use super::http_text;
use super::{write_addr, Batch, Formatter};
use crate::config::TextOptions as Options;
use crate::escape::{escape, escape_inline, passes};
use crate::event::{Direction, Event, Handshake};
use crate::proto::Http;

pub struct Text {
    opts: Options,
    /// Times are printed relative to the first event.
    start_ns: Option<u64>,
    /// The row being built, reused: formatting rows through `fmt` cost more than the
    /// probes themselves at small payloads.
    line: Line,
}

impl Text {
    /// The format, with its header row appended to `out`.
    pub fn new(opts: Options, out: &mut Vec<u8>) -> Self {
        let mut line = Line::default();
        for (i, (text, width)) in columns(opts).enumerate() {
            line.cell(i, text.as_bytes(), width);
        }
        line.0.push(b'\n');
        out.extend_from_slice(&line.0);
        Text {
            opts,
            start_ns: None,
            line,
        }
    }
}

/// The header's columns and their widths, as bcc's sslsniff.py lays them out.
fn columns(opts: Options) -> impl Iterator<Item = (&'static str, usize)> {
    let base = [
        ("FUNC", 12),
        ("TIME(s)", 18),
        ("COMM", 16),
        ("PID", 7),
        ("LEN", 6),
    ];
    let extra = [("UID", 7), ("TID", 7), ("CONTAINER", SHORT_ID)];
    let latency = [("LAT(ms)", 7)];
    let conn = [("FD", 4), ("LADDR", 21), ("RADDR", 21)];
    base.into_iter()
        .chain(extra.into_iter().filter(move |_| opts.ids))
        .chain(latency.into_iter().filter(move |_| opts.latency))
        .chain(conn.into_iter().filter(move |_| opts.conn))
}

/// A container id is shown by its first 12 digits, as `docker ps` shows it.
const SHORT_ID: usize = 12;

/// A row of left-aligned, space-separated cells.
#[derive(Default)]
struct Line(Vec<u8>);

impl Line {
    /// A cell whose text `write` appends, padded to `width`.
    fn cell_with(&mut self, index: usize, width: usize, write: impl FnOnce(&mut Vec<u8>)) {
        if index > 0 {
            self.0.push(b' ');
        }
        let start = self.0.len();
        write(&mut self.0);
        let len = self.0.len() - start;
        self.0
            .resize(self.0.len() + width.saturating_sub(len), b' ');
    }

    fn cell(&mut self, index: usize, text: &[u8], width: usize) {
        self.cell_with(index, width, |line| line.extend_from_slice(text));
    }

    fn int(&mut self, index: usize, value: impl itoa::Integer, width: usize) {
        self.cell(index, itoa::Buffer::new().format(value).as_bytes(), width);
    }

    /// `value` in units of 10^-digits, as a decimal number, without floating point.
    fn decimal(&mut self, index: usize, value: i64, digits: u32, width: usize) {
        let scale = 10u64.pow(digits);
        let v = value.unsigned_abs();
        self.cell_with(index, width, |line| {
            if value < 0 {
                line.push(b'-');
            }
            line.extend_from_slice(itoa::Buffer::new().format(v / scale).as_bytes());
            line.push(b'.');
            let mut frac = itoa::Buffer::new();
            let frac = frac.format(v % scale).as_bytes();
            line.resize(line.len() + digits as usize - frac.len(), b'0');
            line.extend_from_slice(frac);
        });
    }
}

/// bcc's FUNC column.
fn func_label(direction: Direction) -> &'static str {
    match direction {
        Direction::Read => "READ/RECV",
        Direction::Write => "WRITE/SEND",
        Direction::Handshake => "HANDSHAKE",
    }
}

impl Text {
    /// Builds the event's row in `self.line`.
    fn row(&mut self, ev: &Event) {
        let c = &ev.call;
        let start = *self.start_ns.get_or_insert(c.end_ns());
        let line = &mut self.line;
        line.0.clear();
        line.cell(0, func_label(c.direction).as_bytes(), 12);
        line.decimal(1, c.end_ns() as i64 - start as i64, 9, 18);
        // Writing into a Vec cannot fail.
        line.cell_with(2, 16, |line| drop(escape_inline(line, c.comm.bytes())));
        line.int(3, c.pid, 7);
        // A handshake's LEN is its return value, as in bcc; signed, never 4294967295.
        if ev.handshake.is_some() {
            line.int(4, c.ret, 6);
        } else {
            line.int(4, c.len, 6);
        }
        if self.opts.ids {
            line.int(5, c.uid, 7);
            line.int(6, c.tid, 7);
            // Hex digits only (checked when read from the path): nothing to escape.
            let container = ev
                .cgroup
                .as_deref()
                .and_then(|cg| cg.container_id.as_deref());
            let short = container.map_or("-", |id| &id[..SHORT_ID.min(id.len())]);
            line.cell(7, short.as_bytes(), SHORT_ID);
        }
        if self.opts.latency {
            line.decimal(8, (c.latency_ns as i64 + 500) / 1000, 3, 7);
        }
        if self.opts.conn {
            // "-": the call did no socket I/O of its own (served from the library's
            // buffer, or a custom BIO); nothing is guessed.
            match c.conn.fd {
                Some(fd) => line.int(9, fd, 4),
                None => line.cell(9, b"-", 4),
            }
            for (i, a) in [(10, c.conn.local), (11, c.conn.remote)] {
                line.cell_with(i, 21, |line| match a {
                    Some(a) => write_addr(line, a),
                    None => line.push(b'-'),
                });
            }
        }
        line.0.push(b'\n');
    }

    fn handshake_end(ev: &Event, verdict: Handshake, out: &mut Vec<u8>) -> io::Result<()> {
        let (func, ret) = (ev.call.func.name, ev.call.ret);
        match verdict {
            Handshake::Done => Ok(()),
            Handshake::Failed => writeln!(
                out,
                "----- HANDSHAKE FAILED ({func} returned {ret}) -----\n"
            ),
            Handshake::NotCompleted => writeln!(
                out,
                "----- HANDSHAKE NOT COMPLETED ({func} returned {ret}, no success followed) -----\n"
            ),
        }
    }

    fn data_end(ev: &Event, out: &mut Vec<u8>) -> io::Result<()> {
        if ev.truncated() == 0 && ev.undelivered == 0 {
            out.extend_from_slice(b"----- END DATA -----\n\n");
            return Ok(());
        }
        write!(out, "----- END DATA")?;
        if ev.truncated() > 0 {
            write!(out, " (TRUNCATED, {} bytes truncated)", ev.truncated())?;
        }
        if ev.undelivered > 0 {
            write!(out, " (INCOMPLETE, {} bytes undelivered)", ev.undelivered)?;
        }
        writeln!(out, " -----\n")
    }
}

impl Formatter for Text {
    fn event(&mut self, ev: &Event, http: Option<&Http>, out: &mut Batch) -> io::Result<()> {
        self.row(ev);
        out.extend_from_slice(&self.line.0);
        if let Some(verdict) = ev.handshake {
            return Self::handshake_end(ev, verdict, out);
        }
        out.extend_from_slice(b"----- DATA -----\n");
        if self.opts.hexdump {
            hexdump(out, &ev.data);
        } else if let Some(decoded) = http {
            http_text::write_text(&mut **out, decoded, &ev.data)?;
        } else if passes(&ev.data) {
            // Written as it is: from where it is, when it can be.
            out.payload(&ev.data, 0..ev.data.len());
            out.push(b'\n');
        } else {
            escape(&mut **out, &ev.data)?;
            out.push(b'\n');
        }
        Self::data_end(ev, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing::event;
    use crate::event::Comm;

    #[test]
    fn decimals_print_without_floating_point() {
        let decimal = |value, digits, width| {
            let mut line = Line::default();
            line.decimal(0, value, digits, width);
            String::from_utf8(line.0).unwrap()
        };
        assert_eq!(decimal(1_234_567_890, 9, 12), "1.234567890 ");
        assert_eq!(decimal(-5, 9, 0), "-0.000000005");
        assert_eq!(decimal(1500, 3, 0), "1.500");
        assert_eq!(decimal(0, 3, 0), "0.000");
    }

    fn render(opts: Options, events: &[Event]) -> String {
        render_http(opts, events, None)
    }

    fn render_http(opts: Options, events: &[Event], http: Option<&Http>) -> String {
        let mut out = Batch::default();
        let mut text = Text::new(opts, &mut out);
        for ev in events {
            text.event(ev, http, &mut out).unwrap();
        }
        let mut written = Vec::new();
        out.write_to(&mut written).unwrap();
        String::from_utf8(written).unwrap()
    }

    #[test]
    fn a_payload_put_together_is_written_as_one_copied() {
        let data = [&b"GET /x HTTP/1.1\n".repeat(1000)[..], b"\r\x1b"].concat();
        for data in [&data[..16_000], &data[..]] {
            let copied = render(Options::default(), &[event("SSL_read", data)]);
            let mut ev = event("SSL_read", data);
            ev.data = crate::event::Payload::Shared(std::sync::Arc::new(data.to_vec()));
            assert_eq!(render(Options::default(), &[ev]), copied);
        }
    }

    #[test]
    fn rows_follow_bcc_layout() {
        let out = render(Options::default(), &[event("SSL_write", b"GET /")]);
        assert_eq!(
            out,
            "FUNC         TIME(s)            COMM             PID     LEN   \n\
             WRITE/SEND   0.000000000        curl             42      5     \n\
             ----- DATA -----\nGET /\n----- END DATA -----\n\n"
        );
    }

    #[test]
    fn a_hostile_command_name_stays_in_its_cell() {
        let mut ev = event("SSL_write", b"x");
        ev.call.comm = Comm::new(b"a\x1b]0;pwn\x07\nZ");
        let out = render(Options::default(), &[ev]);
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
        assert_eq!(
            out.lines().nth(1).unwrap().split_whitespace().nth(2),
            Some("a\\x1b]0;pwn\\x07\\x0aZ")
        );
    }

    #[test]
    fn extra_and_latency_columns() {
        let opts = Options {
            ids: true,
            latency: true,
            ..Default::default()
        };
        let out = render(opts, &[event("SSL_read", b"x")]);
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            [
                "FUNC",
                "TIME(s)",
                "COMM",
                "PID",
                "LEN",
                "UID",
                "TID",
                "CONTAINER",
                "LAT(ms)"
            ]
        );
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            [
                "READ/RECV",
                "0.000000000",
                "curl",
                "42",
                "1",
                "1000",
                "43",
                "-",
                "1.500"
            ]
        );
        let mut ev = event("SSL_read", b"x");
        let path = format!(
            "/system.slice/docker-{}.scope",
            &"0123456789ab".repeat(6)[..64]
        );
        ev.cgroup = Some(std::rc::Rc::new(crate::cgroup::Cgroup::new(path.into())));
        let out = render(opts, &[ev]);
        let row = out.lines().nth(1).unwrap().split_whitespace().nth(7);
        assert_eq!(row, Some("0123456789ab"));
    }

    #[test]
    fn connection_columns_say_dash_when_unknown() {
        let mut known = event("SSL_write", b"x");
        known.call.conn.fd = Some(5);
        known.call.conn.local = Some("127.0.0.1:40000".parse().unwrap());
        known.call.conn.remote = Some("127.0.0.1:8443".parse().unwrap());
        let unknown = event("SSL_read", b"y");
        let opts = Options {
            conn: true,
            ..Default::default()
        };
        let out = render(opts, &[known, unknown]);
        let rows: Vec<Vec<&str>> = out
            .lines()
            .filter(|l| ["FUNC", "READ", "WRITE"].iter().any(|p| l.starts_with(p)))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0][0..],
            ["FUNC", "TIME(s)", "COMM", "PID", "LEN", "FD", "LADDR", "RADDR"]
        );
        assert_eq!(rows[1][5..], ["5", "127.0.0.1:40000", "127.0.0.1:8443"]);
        assert_eq!(rows[2][5..], ["-", "-", "-"]);
    }

    #[test]
    fn marks_truncated_and_incomplete_calls() {
        let mut ev = event("SSL_read", b"abc");
        ev.call.len = 10;
        ev.call.captured = 5;
        ev.undelivered = 2;
        let out = render(Options::default(), &[ev]);
        assert!(
            out.contains(
                "----- END DATA (TRUNCATED, 5 bytes truncated) (INCOMPLETE, 2 bytes undelivered) -----"
            ),
            "{out}"
        );
    }

    #[test]
    fn failed_handshake_is_reported_signed() {
        let mut ev = event("SSL_do_handshake", b"");
        ev.call.ret = -1;
        ev.handshake = Some(Handshake::Failed);
        let out = render(Options::default(), &[ev]);
        assert!(out.contains("HANDSHAKE "), "{out}");
        assert!(out.contains(" -1 "), "{out}");
        assert!(out.contains("HANDSHAKE FAILED"), "{out}");
    }

    /// An HTTP/2 request written by a client from the start of its connection.
    fn http2_request(data: &[u8]) -> (Event<'_>, Option<Http>) {
        let key = crate::proto::ConnKey { pid: 1, conn: 2 };
        let mut decoders = crate::proto::Decoders::new();
        let http = decoders.decode(key, crate::proto::Dir::Write, data);
        (event("SSL_write", data), http)
    }

    fn request_bytes() -> Vec<u8> {
        use crate::proto::testing::{literals, raw_frame};
        let mut data = crate::proto::http2::PREFACE.to_vec();
        let block = literals(&[(":method", "GET"), (":path", "/x"), ("a", "\x1b[2J")]);
        data.extend(raw_frame(1, 0x5, 1, &block));
        data
    }

    #[test]
    fn http2_calls_show_their_frames_and_hexdump_their_bytes() {
        let data = request_bytes();
        let (ev, http) = http2_request(&data);
        let out = render_http(Options::default(), &[ev], http.as_ref());
        assert!(
            out.contains("[PREFACE] PRI * HTTP/2.0\n[stream 1 HEADERS END_STREAM END_HEADERS] :method: GET  :path: /x  a: \\x1b[2J\n"),
            "{out}"
        );
        let opts = Options {
            hexdump: true,
            ..Options::default()
        };
        let (ev, http) = http2_request(&data);
        let out = render_http(opts, &[ev], http.as_ref());
        assert!(out.contains("00000000  50 52 49 20"), "{out}");
        assert!(!out.contains("[PREFACE]"), "{out}");
    }
}
