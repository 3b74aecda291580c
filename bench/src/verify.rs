//! Checks sslsniff's output, as it streams out, against what the load did: every write
//! must appear once, whole and byte-exact; when the reader is traced too, its reads, in
//! order, must be exactly the stream of messages.

use std::borrow::Cow;
use std::io::{BufReader, Read};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::message::Messages;
use window::Window;

mod hexdump;
mod pcap;
mod window;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    /// Calls the load made that sslsniff traces: writes, and reads when both sides are.
    pub made: u64,
    /// Calls that appear once with LEN equal to their payload, and exactly the bytes
    /// the call moved.
    pub captured: u64,
    /// Events printed whole that are no call of the run (or a repeat, or out of place).
    pub wrong: u64,
    /// Events marked truncated or undelivered.
    pub cut: u64,
    /// Bytes of output received.
    pub output_bytes: u64,
}

impl Capture {
    pub fn all_whole(&self) -> bool {
        self.captured == self.made && self.wrong == 0 && self.cut == 0
    }

    /// Two outputs of one run (stdout and a --pcap file): the run captured what both did.
    pub fn worse(&self, other: &Capture) -> Capture {
        Capture {
            made: self.made,
            captured: self.captured.min(other.captured),
            wrong: self.wrong.max(other.wrong),
            cut: self.cut.max(other.cut),
            output_bytes: self.output_bytes + other.output_bytes,
        }
    }
}

/// What the checker parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    /// Text with `--hexdump` payloads.
    Hexdump,
    Json,
    Pcap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Read,
    Write,
}

/// What the load did, that the output is held to.
pub struct Expected<'m> {
    pub messages: &'m Messages,
    pub n: u64,
    pub size: usize,
    /// The reader's calls, when they are traced; None when only the writer is.
    pub reads: Option<u64>,
}

/// Reads `output` to its end (sslsniff's exit), checking every event in it.
pub fn check(output: impl Read, format: Format, expected: &Expected) -> Result<Capture> {
    let mut counted = Counted {
        inner: output,
        bytes: 0,
    };
    let mut checker = Checker::new(expected);
    match format {
        Format::Text => check_text(&mut counted, false, &mut checker)?,
        Format::Hexdump => check_text(&mut counted, true, &mut checker)?,
        Format::Json => check_json(&mut counted, &mut checker)?,
        Format::Pcap => pcap::check(
            BufReader::with_capacity(1 << 16, &mut counted),
            &mut |call| {
                // A read's place in the stream is its sequence number: a call that left no
                // packet (all of it undelivered) must not shift every later one.
                if let (Dir::Read, Some(pos)) = (call.dir, call.stream_pos) {
                    checker.read_pos = pos;
                }
                let len = call.payload.len() as u64;
                checker.event(call.dir, len, call.payload, call.cut)
            },
        )?,
    }
    checker.c.output_bytes = counted.bytes;
    Ok(checker.c)
}

struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

struct Checker<'e> {
    expected: &'e Expected<'e>,
    c: Capture,
    seen: Vec<bool>,
    /// Bytes of the read stream accounted for so far.
    read_pos: u64,
}

impl<'e> Checker<'e> {
    fn new(expected: &'e Expected<'e>) -> Self {
        Checker {
            expected,
            c: Capture {
                made: expected.n + expected.reads.unwrap_or(0),
                ..Default::default()
            },
            seen: vec![false; expected.n as usize],
            read_pos: 0,
        }
    }

    fn event(&mut self, dir: Dir, len: u64, payload: &[u8], cut: bool) {
        let e = self.expected;
        match dir {
            // Only the writer is traced: a read row is the in-kernel filter's business.
            Dir::Read if e.reads.is_none() => {}
            Dir::Read => {
                let pos = self.read_pos;
                // The stream moves on by LEN whatever was printed, so that one bad read
                // does not make every later one look wrong.
                self.read_pos += len;
                if cut {
                    self.c.cut += 1;
                } else if len == payload.len() as u64
                    && e.messages.continues_stream(pos, payload, e.n)
                {
                    self.c.captured += 1;
                } else {
                    self.c.wrong += 1;
                }
            }
            Dir::Write if cut => self.c.cut += 1,
            Dir::Write => match e.messages.identify(payload) {
                Some(i) if len == e.size as u64 && i < e.n && !self.seen[i as usize] => {
                    self.seen[i as usize] = true;
                    self.c.captured += 1;
                }
                _ => self.c.wrong += 1,
            },
        }
    }
}

fn check_text(r: impl Read, hexdump: bool, checker: &mut Checker) -> Result<()> {
    let mut w = Window::new(r);
    while let Some(line) = w.line()? {
        // The column header and the blank line after each event are not rows.
        let Some((dir, len)) = parse_row(line)? else {
            continue;
        };
        if w.line()? != Some(b"----- DATA -----\n") {
            bail!("an event row not followed by '----- DATA -----'");
        }
        let (payload, cut) = read_payload(&mut w, hexdump)?;
        if hexdump {
            checker.event(dir, len, &hexdump::decode(payload)?, cut);
        } else {
            checker.event(dir, len, payload, cut);
        }
    }
    Ok(())
}

/// The fields of a JSON event that the check needs; the payload is borrowed from the
/// line when it has no escapes, as the load's messages do not.
#[derive(Deserialize)]
struct JsonEvent<'a> {
    #[serde(borrow)]
    direction: Cow<'a, str>,
    len: u64,
    truncated_bytes: u64,
    undelivered_bytes: u64,
    #[serde(borrow)]
    encoding: Cow<'a, str>,
    #[serde(borrow)]
    data: Option<Cow<'a, str>>,
}

fn check_json(r: impl Read, checker: &mut Checker) -> Result<()> {
    let mut w = Window::new(r);
    while let Some(line) = w.line()? {
        let (ev, data) = parse_json_event(line)?;
        let dir = match &*ev.direction {
            "read" => Dir::Read,
            "write" => Dir::Write,
            _ => continue,
        };
        let cut = ev.truncated_bytes > 0 || ev.undelivered_bytes > 0;
        // The messages are ASCII: a base64 payload cannot be one of them.
        let payload = match (&*ev.encoding, data, &ev.data) {
            ("utf8", Some(data), _) => data,
            ("utf8", None, Some(data)) => data.as_bytes(),
            _ => b"\0",
        };
        checker.event(dir, ev.len, payload, cut);
    }
    Ok(())
}

/// The key that starts the payload. Inside a JSON string every `"` is escaped, so these
/// bytes can only be the key itself.
const DATA_KEY: &[u8] = b"\"data\":\"";

/// An event, and its payload apart when it is the last field: the payload is then taken
/// as it stands, not unescaped, and only the fields before it go through the JSON
/// parser. The load's messages need no escape, so a payload that holds one is not one
/// of them whatever it says, and is counted wrong. The check runs beside the load and
/// competes with it for the CPUs: parsing 64 KiB strings cost it more than sslsniff's
/// own escaping, and a scan for escapes was one more pass over every byte. Any other
/// line is parsed whole.
fn parse_json_event(line: &[u8]) -> Result<(JsonEvent<'_>, Option<&[u8]>)> {
    let fast = memchr::memmem::find(line, DATA_KEY).and_then(|at| {
        let data = line[at + DATA_KEY.len()..].strip_suffix(b"\"}\n")?;
        let mut head = line[..at].to_vec();
        head.extend_from_slice(b"\"data\":null}");
        let ev: JsonEvent = serde_json::from_slice(&head).ok()?;
        Some((owned(ev), data))
    });
    if let Some((ev, data)) = fast {
        return Ok((ev, Some(data)));
    }
    let ev = serde_json::from_slice(line).with_context(|| {
        format!(
            "not a JSON event: {:?}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        )
    })?;
    Ok((ev, None))
}

/// The fields of an event parsed from a line of our own making, kept past it.
fn owned(ev: JsonEvent) -> JsonEvent<'static> {
    JsonEvent {
        direction: Cow::Owned(ev.direction.into_owned()),
        encoding: Cow::Owned(ev.encoding.into_owned()),
        data: ev.data.map(|d| Cow::Owned(d.into_owned())),
        ..ev
    }
}

/// `WRITE/SEND   0.000012345        bench-client     1234    100   `: the direction and
/// the LEN column, which is the last one without -x or -l.
fn parse_row(line: &[u8]) -> Result<Option<(Dir, u64)>> {
    let dir = if line.starts_with(b"WRITE/SEND ") {
        Dir::Write
    } else if line.starts_with(b"READ/RECV ") {
        Dir::Read
    } else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(line);
    let len = text.split_whitespace().last().and_then(|l| l.parse().ok());
    match len {
        Some(len) => Ok(Some((dir, len))),
        None => bail!("an event row without a LEN column: {:?}", text.trim_end()),
    }
}

/// The payload up to the END DATA line, without the newline printed after it, and
/// whether the END DATA line says that part of it is missing. An empty payload is an
/// empty line in text, and nothing at all in hexdump rows.
fn read_payload<R: Read>(w: &mut Window<R>, hexdump: bool) -> Result<(&[u8], bool)> {
    const END: &[u8] = b"\n----- END DATA";
    let mut end_line = None;
    let len = w.find(|rest, from| {
        // The END DATA line is the first line that starts so: the payload's first, or
        // one after a newline.
        let start = match end_line {
            Some(start) => start,
            None if rest.starts_with(&END[1..]) => *end_line.insert(0),
            None => *end_line.insert(window::find_from(rest, END, from)? + 1),
        };
        memchr::memchr(b'\n', &rest[start..]).map(|at| start + at + 1)
    })?;
    let (Some(len), Some(start)) = (len, end_line) else {
        bail!("the output ends inside an event's payload");
    };
    let item = w.take(len);
    let cut = &item[start..] != b"----- END DATA -----\n";
    match &item[..start] {
        [] if hexdump => Ok((&[], cut)),
        [payload @ .., b'\n'] => Ok((payload, cut)),
        _ => bail!("a payload not followed by a newline"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payloads_are_taken_apart_when_they_come_last() {
        let head = r#"{"direction":"write","comm":"x\"data\":\"y","len":3,"truncated_bytes":0,"undelivered_bytes":0,"encoding":"utf8","#;
        let plain = format!("{head}\"data\":\"abc\"}}\n");
        let (ev, data) = parse_json_event(plain.as_bytes()).unwrap();
        assert_eq!((&*ev.direction, data), ("write", Some(&b"abc"[..])));
        let escaped = format!("{head}\"data\":\"a\\nc\"}}\n");
        let (_, data) = parse_json_event(escaped.as_bytes()).unwrap();
        assert_eq!(data, Some(&b"a\\nc"[..]), "taken as it stands");
        let other = format!("{head}\"data\":\"abc\",\"http\":{{}}}}\n");
        let (ev, data) = parse_json_event(other.as_bytes()).unwrap();
        assert_eq!((ev.data.as_deref(), data), (Some("abc"), None));
    }

    fn event(row: &str, payload: &[u8], end: &str) -> Vec<u8> {
        let mut out = format!("{row}\n----- DATA -----\n").into_bytes();
        out.extend_from_slice(payload);
        out.extend_from_slice(format!("\n----- END DATA{end} -----\n\n").as_bytes());
        out
    }

    fn check_bytes(text: &[u8], messages: &Messages, n: u64, size: usize) -> Capture {
        let expected = Expected {
            messages,
            n,
            size,
            reads: None,
        };
        check(text, Format::Text, &expected).unwrap()
    }

    #[test]
    fn counts_whole_wrong_and_cut_writes() {
        let m = Messages::new(7, 30);
        let mut msg = m.buffer();
        let mut out = b"FUNC         TIME(s)            COMM             PID     LEN   \n".to_vec();
        for i in 0..3 {
            m.set_index(&mut msg, i);
            out.extend(event(
                "WRITE/SEND   0.1  bench-client  42  30    ",
                &msg,
                "",
            ));
        }
        // A duplicate, a cut one and one with a damaged byte.
        out.extend(event("WRITE/SEND   0.2  bench-client  42  30", &msg, ""));
        out.extend(event(
            "WRITE/SEND   0.3  bench-client  42  30",
            &msg[..10],
            " (INCOMPLETE, 20 bytes not delivered)",
        ));
        msg[25] = b'!';
        out.extend(event("WRITE/SEND   0.4  bench-client  42  30", &msg, ""));
        out.extend(event(
            "READ/RECV    0.5  bench-server  42  60",
            b"whatever\nsplit",
            "",
        ));
        out.extend(event("READ/RECV    0.6  bench-server  42  30", b"", ""));

        let c = check_bytes(&out, &m, 4, 30);
        assert_eq!(
            c,
            Capture {
                made: 4,
                captured: 3,
                wrong: 2,
                cut: 1,
                output_bytes: out.len() as u64,
            }
        );
        assert!(!c.all_whole());
    }

    #[test]
    fn a_truncated_output_is_an_error() {
        let m = Messages::new(7, 30);
        let expected = Expected {
            messages: &m,
            n: 1,
            size: 30,
            reads: None,
        };
        let text = &b"WRITE/SEND 0.1 x 1 30\n----- DATA -----\nabc"[..];
        assert!(check(text, Format::Text, &expected).is_err());
        assert!(check(&b"{\"direction\""[..], Format::Json, &expected).is_err());
    }

    #[test]
    fn reads_must_be_the_stream_in_order_and_json_counts_alike() {
        let m = Messages::new(9, 30);
        let mut stream = Vec::new();
        for i in 0..2 {
            let mut msg = m.buffer();
            m.set_index(&mut msg, i);
            stream.extend_from_slice(&msg);
        }
        let json = |dir: &str, data: &[u8], undelivered: u64| {
            let data = std::str::from_utf8(data).unwrap();
            format!(
                "{{\"direction\":\"{dir}\",\"len\":{},\"truncated_bytes\":0,\"undelivered_bytes\":{undelivered},\"encoding\":\"utf8\",\"data\":\"{data}\"}}\n",
                data.len() as u64 + undelivered
            )
        };
        let expected = Expected {
            messages: &m,
            n: 2,
            size: 30,
            reads: Some(4),
        };
        let mut out = json("write", &stream[..30], 0);
        out += &json("read", &stream[..20], 0);
        out += &json("read", &stream[20..45], 0);
        out += &json("write", &stream[30..], 0);
        // Out of place: the stream is at byte 45.
        out += &json("read", &stream[50..55], 0);
        out += &json("read", &stream[55..58], 2);
        let c = check(out.as_bytes(), Format::Json, &expected).unwrap();
        assert_eq!((c.made, c.captured, c.wrong, c.cut), (6, 4, 1, 1));
    }
}
