//! Checks sslsniff's text output against what the load did: every write must appear
//! once, whole and byte-exact. sslsniff traces the writer thread only; a read row, should
//! one appear, is passed over.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::message::Messages;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    /// Writes the load made.
    pub made: u64,
    /// Writes that appear once with LEN = S and exactly the message that was sent.
    pub captured: u64,
    /// Write events printed whole that are no message of the run, or one seen twice.
    pub wrong: u64,
    /// Write events marked TRUNCATED or INCOMPLETE.
    pub cut: u64,
}

impl Capture {
    pub fn all_writes_whole(&self) -> bool {
        self.captured == self.made && self.wrong == 0 && self.cut == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

pub fn check(output: &Path, messages: &Messages, n: u64, size: usize) -> Result<Capture> {
    let file = File::open(output).with_context(|| format!("cannot open {}", output.display()))?;
    check_stream(BufReader::with_capacity(1 << 20, file), messages, n, size)
}

fn check_stream(mut r: impl BufRead, messages: &Messages, n: u64, size: usize) -> Result<Capture> {
    let mut c = Capture {
        made: n,
        ..Default::default()
    };
    let mut seen = vec![false; n as usize];
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(c);
        }
        // The column header and the blank line after each event are not rows.
        let Some((dir, len)) = parse_row(&line)? else {
            continue;
        };
        let (payload, cut) = read_payload(&mut r)?;
        match dir {
            Dir::Read => {}
            Dir::Write if cut => c.cut += 1,
            Dir::Write => match messages.identify(&payload) {
                Some(i) if len == size as u64 && i < n && !seen[i as usize] => {
                    seen[i as usize] = true;
                    c.captured += 1;
                }
                _ => c.wrong += 1,
            },
        }
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

/// The payload between the DATA markers, without the newline printed after it, and
/// whether the END DATA line says that part of it is missing.
fn read_payload(r: &mut impl BufRead) -> Result<(Vec<u8>, bool)> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line != b"----- DATA -----\n" {
        bail!("an event row not followed by '----- DATA -----'");
    }
    let mut payload = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            bail!("the output ends inside an event's payload");
        }
        if line.starts_with(b"----- END DATA") {
            let cut = line != b"----- END DATA -----\n";
            if payload.pop() != Some(b'\n') {
                bail!("a payload not followed by a newline");
            }
            return Ok((payload, cut));
        }
        payload.extend_from_slice(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(row: &str, payload: &[u8], end: &str) -> Vec<u8> {
        let mut out = format!("{row}\n----- DATA -----\n").into_bytes();
        out.extend_from_slice(payload);
        out.extend_from_slice(format!("\n----- END DATA{end} -----\n\n").as_bytes());
        out
    }

    fn check_bytes(text: &[u8], messages: &Messages, n: u64, size: usize) -> Capture {
        check_stream(text, messages, n, size).unwrap()
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
            }
        );
        assert!(!c.all_writes_whole());
    }

    #[test]
    fn a_truncated_output_is_an_error() {
        let m = Messages::new(7, 30);
        assert!(check_stream(
            &b"WRITE/SEND 0.1 x 1 30\n----- DATA -----\nabc"[..],
            &m,
            1,
            30
        )
        .is_err());
    }
}
