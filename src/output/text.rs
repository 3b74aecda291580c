//! bcc sslsniff's layout: a header, one row per call, then the payload between DATA
//! markers, as terminal-safe text or `hexdump -C` rows.

use std::io::{self, Write};

use crate::bpf::types::direction;
use crate::event::{Event, Handshake};
use crate::output::Output;

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// UID and TID columns.
    pub extra: bool,
    /// LAT(ms) column.
    pub latency: bool,
    /// FD, LADDR and RADDR columns.
    pub conn: bool,
    pub hexdump: bool,
}

pub struct Text<W: Write> {
    out: W,
    opts: Options,
    /// Times are printed relative to the first event.
    start_ns: Option<u64>,
    /// The row being built, reused: formatting rows through `fmt` cost more than the
    /// probes themselves at small payloads.
    line: Line,
}

impl<W: Write> Text<W> {
    pub fn new(mut out: W, opts: Options) -> io::Result<Self> {
        let mut line = Line::default();
        for (i, (text, width)) in columns(opts).enumerate() {
            line.cell(i, text.as_bytes(), width);
        }
        line.0.push(b'\n');
        out.write_all(&line.0)?;
        Ok(Text {
            out,
            opts,
            start_ns: None,
            line,
        })
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
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
    let extra = [("UID", 7), ("TID", 7)];
    let latency = [("LAT(ms)", 7)];
    let conn = [("FD", 4), ("LADDR", 21), ("RADDR", 21)];
    base.into_iter()
        .chain(extra.into_iter().filter(move |_| opts.extra))
        .chain(latency.into_iter().filter(move |_| opts.latency))
        .chain(conn.into_iter().filter(move |_| opts.conn))
}

/// A row of left-aligned, space-separated cells.
#[derive(Default)]
struct Line(Vec<u8>);

impl Line {
    fn cell(&mut self, index: usize, text: &[u8], width: usize) {
        if index > 0 {
            self.0.push(b' ');
        }
        self.0.extend_from_slice(text);
        self.0
            .resize(self.0.len() + width.saturating_sub(text.len()), b' ');
    }

    fn int(&mut self, index: usize, value: impl itoa::Integer, width: usize) {
        self.cell(index, itoa::Buffer::new().format(value).as_bytes(), width);
    }

    /// `value` in units of 10^-digits, as a decimal number, without floating point.
    fn decimal(&mut self, index: usize, value: i64, digits: u32, width: usize) {
        let scale = 10u64.pow(digits);
        let v = value.unsigned_abs();
        let mut text = Vec::with_capacity(32);
        if value < 0 {
            text.push(b'-');
        }
        text.extend_from_slice(itoa::Buffer::new().format(v / scale).as_bytes());
        text.push(b'.');
        let frac = itoa::Buffer::new().format(v % scale).as_bytes().to_vec();
        text.resize(text.len() + digits as usize - frac.len(), b'0');
        text.extend_from_slice(&frac);
        self.cell(index, &text, width);
    }
}

fn func_label(ev: &Event) -> &'static str {
    match ev.hdr.dir {
        direction::DIR_READ => "READ/RECV",
        direction::DIR_WRITE => "WRITE/SEND",
        _ => "HANDSHAKE",
    }
}

impl<W: Write> Output for Text<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        let start = *self.start_ns.get_or_insert(ev.end_ns());
        let h = &ev.hdr;
        let line = &mut self.line;
        line.0.clear();
        line.cell(0, func_label(ev).as_bytes(), 12);
        line.decimal(1, ev.end_ns() as i64 - start as i64, 9, 18);
        line.cell(2, ev.comm().as_bytes(), 16);
        line.int(3, h.pid, 7);
        // A handshake's LEN is its return value, as in bcc; signed, never 4294967295.
        if ev.handshake.is_some() {
            line.int(4, h.ret, 6);
        } else {
            line.int(4, h.len, 6);
        }
        if self.opts.extra {
            line.int(5, h.uid, 7);
            line.int(6, h.tid, 7);
        }
        if self.opts.latency {
            line.decimal(7, (h.latency_ns as i64 + 500) / 1000, 3, 7);
        }
        if self.opts.conn {
            // "-": the call did no socket I/O of its own (served from the library's
            // buffer, or a custom BIO); nothing is guessed.
            let c = ev.conn();
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            line.cell(8, or_dash(c.fd.map(|fd| fd.to_string())).as_bytes(), 4);
            line.cell(9, or_dash(c.local.map(|a| a.to_string())).as_bytes(), 21);
            line.cell(10, or_dash(c.remote.map(|a| a.to_string())).as_bytes(), 21);
        }
        line.0.push(b'\n');
        self.out.write_all(&line.0)?;
        match ev.handshake {
            Some(Handshake::Done) => return Ok(()),
            Some(Handshake::Failed) => {
                return writeln!(
                    self.out,
                    "----- HANDSHAKE FAILED ({} returned {}) -----\n",
                    ev.func_name(),
                    h.ret
                )
            }
            Some(Handshake::NotCompleted) => {
                return writeln!(
                    self.out,
                    "----- HANDSHAKE NOT COMPLETED ({} returned {}, no success followed) -----\n",
                    ev.func_name(),
                    h.ret
                )
            }
            None => {}
        }
        self.out.write_all(b"----- DATA -----\n")?;
        if self.opts.hexdump {
            hexdump(&mut self.out, &ev.data)?;
        } else {
            escape(&mut self.out, &ev.data)?;
            self.out.write_all(b"\n")?;
        }
        if ev.truncated() == 0 && ev.missing == 0 {
            return self.out.write_all(b"----- END DATA -----\n\n");
        }
        write!(self.out, "----- END DATA")?;
        if ev.truncated() > 0 {
            write!(self.out, " (TRUNCATED, {} bytes lost)", ev.truncated())?;
        }
        if ev.missing > 0 {
            write!(
                self.out,
                " (INCOMPLETE, {} bytes not delivered)",
                ev.missing
            )?;
        }
        writeln!(self.out, " -----\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes a payload so that a terminal shows it and cannot be driven by it: printable
/// UTF-8, newline, carriage return and tab pass; every other byte is written `\xNN`.
pub fn escape(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        // Printable ASCII is most of what passes: copy it in runs.
        let run = passing_run(rest);
        out.write_all(&rest[..run])?;
        rest = &rest[run..];
        if rest.is_empty() {
            break;
        }
        match first_char(&rest[..rest.len().min(4)]) {
            Some(c) if !c.is_control() => {
                out.write_all(&rest[..c.len_utf8()])?;
                rest = &rest[c.len_utf8()..];
            }
            // A control character (C0, DEL or C1) is escaped whole; an invalid sequence
            // one byte at a time, as valid text may follow its first byte.
            found => {
                let width = found.map_or(1, char::len_utf8);
                for b in &rest[..width] {
                    write!(out, "\\x{b:02x}")?;
                }
                rest = &rest[width..];
            }
        }
    }
    Ok(())
}

/// The length of the leading run of bytes that pass unescaped: printable ASCII, \n, \r
/// and \t. Eight bytes at a time while none of them is a control or non-ASCII byte,
/// because this scan is most of the reader's work on large payloads.
fn passing_run(data: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let passes = |b: u8| b.is_ascii_graphic() || matches!(b, b' ' | b'\n' | b'\r' | b'\t');
    let mut i = 0;
    while let Some(word) = data.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("an 8-byte slice"));
        // Some byte is below 0x20, or at or above 0x7f (bit-twiddling "hasless" and
        // "hasmore"): look at this word byte by byte.
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        let del_or_high = (w.wrapping_add(ONES) | w) & HIGHS;
        if below_space | del_or_high != 0 {
            if let Some(j) = word.iter().position(|&b| !passes(b)) {
                return i + j;
            }
        }
        i += 8;
    }
    i + data[i..]
        .iter()
        .position(|&b| !passes(b))
        .unwrap_or(data.len() - i)
}

/// The character that `bytes` starts with, if they start with valid UTF-8.
fn first_char(bytes: &[u8]) -> Option<char> {
    let valid = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    valid.chars().next()
}

/// `hexdump -C` rows: offset, 16 bytes in hex split 8+8, and an ASCII gutter.
pub fn hexdump(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    for (row, bytes) in data.chunks(16).enumerate() {
        write!(out, "{:08x} ", row * 16)?;
        for i in 0..16 {
            if i == 8 {
                out.write_all(b" ")?;
            }
            match bytes.get(i) {
                Some(b) => write!(out, " {b:02x}")?,
                None => out.write_all(b"   ")?,
            }
        }
        out.write_all(b"  |")?;
        let gutter: Vec<u8> = bytes
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b
                } else {
                    b'.'
                }
            })
            .collect();
        out.write_all(&gutter)?;
        out.write_all(b"|\n")?;
    }
    if !data.is_empty() {
        writeln!(out, "{:08x}", data.len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::types::event_hdr;
    use std::borrow::Cow;

    fn escaped(data: &[u8]) -> String {
        let mut out = Vec::new();
        escape(&mut out, data).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_control_bytes_and_invalid_utf8() {
        assert_eq!(escaped(b"a\x1b[31mb\x00c"), "a\\x1b[31mb\\x00c");
        assert_eq!(escaped(b"line\r\n\ttab"), "line\r\n\ttab");
        assert_eq!(
            escaped("h\u{e9}llo \u{2603}".as_bytes()),
            "h\u{e9}llo \u{2603}"
        );
        assert_eq!(escaped(b"\xff\xfeok"), "\\xff\\xfeok");
        // C1 control characters are valid UTF-8 and still drive terminals.
        assert_eq!(escaped("x\u{9b}y".as_bytes()), "x\\xc2\\x9by");
        assert_eq!(escaped(b"\x7f"), "\\x7f");
    }

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

    #[test]
    fn word_scan_agrees_with_byte_scan() {
        let passes = |b: u8| b.is_ascii_graphic() || matches!(b, b' ' | b'\n' | b'\r' | b'\t');
        let base: Vec<u8> = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);
        for pos in 0..base.len() {
            for bad in [0u8, 0x1b, 0x1f, 0x7f, 0x80, 0xc3, 0xff] {
                let mut data = base.clone();
                data[pos] = bad;
                let expected = data.iter().position(|&b| !passes(b)).unwrap_or(data.len());
                assert_eq!(passing_run(&data), expected, "byte {bad:#x} at {pos}");
            }
        }
        assert_eq!(passing_run(&base), base.len());
        assert_eq!(passing_run(b""), 0);
    }

    #[test]
    fn hexdump_matches_hexdump_c() {
        let mut out = Vec::new();
        hexdump(&mut out, b"GET / HTTP/1.1\r\nHost").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "00000000  47 45 54 20 2f 20 48 54  54 50 2f 31 2e 31 0d 0a  |GET / HTTP/1.1..|\n\
             00000010  48 6f 73 74                                       |Host|\n\
             00000014\n"
        );
    }

    fn event(dir: direction, data: &[u8]) -> Event<'_> {
        let mut hdr = event_hdr {
            ts_ns: 5_000_000_000,
            latency_ns: 1_500_000,
            len: data.len() as u64,
            captured: data.len() as u64,
            pid: 42,
            tid: 43,
            uid: 1000,
            dir,
            ..Default::default()
        };
        for (d, s) in hdr.comm.iter_mut().zip(b"curl") {
            *d = *s as i8;
        }
        Event {
            hdr,
            data: Cow::Borrowed(data),
            missing: 0,
            handshake: None,
        }
    }

    fn render(opts: Options, events: &[Event]) -> String {
        let mut text = Text::new(Vec::new(), opts).unwrap();
        for ev in events {
            text.event(ev).unwrap();
        }
        String::from_utf8(text.into_inner()).unwrap()
    }

    #[test]
    fn rows_follow_bcc_layout() {
        let out = render(Options::default(), &[event(direction::DIR_WRITE, b"GET /")]);
        assert_eq!(
            out,
            "FUNC         TIME(s)            COMM             PID     LEN   \n\
             WRITE/SEND   0.000000000        curl             42      5     \n\
             ----- DATA -----\nGET /\n----- END DATA -----\n\n"
        );
    }

    #[test]
    fn extra_and_latency_columns() {
        let opts = Options {
            extra: true,
            latency: true,
            ..Default::default()
        };
        let out = render(opts, &[event(direction::DIR_READ, b"x")]);
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["FUNC", "TIME(s)", "COMM", "PID", "LEN", "UID", "TID", "LAT(ms)"]
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
                "1.500"
            ]
        );
    }

    #[test]
    fn connection_columns_say_dash_when_unknown() {
        let mut known = event(direction::DIR_WRITE, b"x");
        known.hdr.conn.fd = 5;
        known.hdr.conn.family = 2;
        known.hdr.conn.lport = 40000;
        known.hdr.conn.rport = 8443;
        known.hdr.conn.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        known.hdr.conn.raddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut unknown = event(direction::DIR_READ, b"y");
        unknown.hdr.conn.fd = -1;
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
        let mut ev = event(direction::DIR_READ, b"abc");
        ev.hdr.len = 10;
        ev.hdr.captured = 5;
        ev.missing = 2;
        let out = render(Options::default(), &[ev]);
        assert!(out.contains("----- END DATA (TRUNCATED, 5 bytes lost) (INCOMPLETE, 2 bytes not delivered) -----"), "{out}");
    }

    #[test]
    fn failed_handshake_is_reported_signed() {
        let mut ev = event(direction::DIR_HANDSHAKE, b"");
        ev.hdr.ret = -1;
        ev.handshake = Some(Handshake::Failed);
        let out = render(Options::default(), &[ev]);
        assert!(out.contains("HANDSHAKE "), "{out}");
        assert!(out.contains(" -1 "), "{out}");
        assert!(out.contains("HANDSHAKE FAILED"), "{out}");
    }
}
