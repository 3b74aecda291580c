//! Bytes from the traced side made safe for a terminal. The traffic, and the names and
//! paths chosen by traced programs, are hostile: nothing they contain may move the
//! cursor, retitle the terminal, reorder what is shown or start a new row. Used by the
//! outputs and by the messages on stderr alike.

use std::io::{self, Write};

/// Writes a payload so that a terminal shows it and cannot be driven by it: printable
/// UTF-8, newline, tab and CR-LF pass; every other byte is written `\xNN`, a bare CR
/// included (it would let the text after it overwrite the line), and bidirectional
/// controls are written `\u{XXXX}` (they would reorder what is shown).
pub fn escape(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    escape_as(out, data, true)
}

/// As `escape`, for text that must stay on one line (a command name, a path): newline
/// and tab are escaped too.
pub fn escape_inline(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    escape_as(out, data, false)
}

fn escape_as(out: &mut impl Write, data: &[u8], multiline: bool) -> io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        // Printable ASCII is most of what passes: copy it in runs.
        let run = if multiline {
            passing_run(rest)
        } else {
            rest.iter()
                .position(|&b| !(b.is_ascii_graphic() || b == b' '))
                .unwrap_or(rest.len())
        };
        out.write_all(&rest[..run])?;
        rest = &rest[run..];
        if rest.is_empty() {
            break;
        }
        if multiline && rest.starts_with(b"\r\n") {
            out.write_all(b"\r\n")?;
            rest = &rest[2..];
            continue;
        }
        let width = match first_char(&rest[..rest.len().min(4)]) {
            Some(c) if is_bidi_control(c) => {
                write!(out, "\\u{{{:04x}}}", c as u32)?;
                rest = &rest[c.len_utf8()..];
                continue;
            }
            Some(c) if !c.is_control() && !c.is_ascii() => {
                out.write_all(&rest[..c.len_utf8()])?;
                rest = &rest[c.len_utf8()..];
                continue;
            }
            // A control character (C0, DEL or C1) is escaped whole; an invalid sequence
            // one byte at a time, as valid text may follow its first byte.
            found => found.map_or(1, char::len_utf8),
        };
        for b in &rest[..width] {
            write!(out, "\\x{b:02x}")?;
        }
        rest = &rest[width..];
    }
    Ok(())
}

/// Characters that reorder the text around them (Unicode's Bidi_Control property).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `escape` would write `data` as it is (a payload of printable ASCII, newlines
/// and tabs): then it need not be copied to be written.
pub fn passes(data: &[u8]) -> bool {
    passing_run(data) == data.len()
}

/// The length of the leading run of bytes that pass unescaped in a payload: printable
/// ASCII, \n and \t. This scan is most of the text reader's work on large payloads.
fn passing_run(data: &[u8]) -> usize {
    clean_run(data, |b| {
        !(b.is_ascii_graphic() || b == b' ') & (b != b'\n') & (b != b'\t')
    })
}

/// The length of the leading run of bytes for which `stops` is false. Whole blocks of
/// 32 bytes are tested with no early exit inside, which the compiler turns into vector
/// compares (SSE2 is in every x86-64): about 10x the speed of a byte loop. `stops` must
/// be a plain comparison of its byte for that to happen.
#[inline(always)]
pub fn clean_run(data: &[u8], stops: impl Fn(u8) -> bool) -> usize {
    const BLOCK: usize = 32;
    let mut blocks = data.chunks_exact(BLOCK);
    let mut i = 0;
    for block in &mut blocks {
        if block.iter().fold(false, |any, &b| any | stops(b)) {
            break;
        }
        i += BLOCK;
    }
    i + data[i..]
        .iter()
        .position(|&b| stops(b))
        .unwrap_or(data.len() - i)
}

/// The character that `bytes` starts with, if they start with valid UTF-8.
pub fn first_char(bytes: &[u8]) -> Option<char> {
    let valid = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    valid.chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(data: &[u8]) -> String {
        let mut out = Vec::new();
        escape(&mut out, data).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn inline(data: &[u8]) -> String {
        let mut out = Vec::new();
        escape_inline(&mut out, data).unwrap();
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
    fn a_bare_carriage_return_cannot_overwrite_the_line() {
        assert_eq!(escaped(b"safe\rEVIL"), "safe\\x0dEVIL");
        assert_eq!(escaped(b"end\r"), "end\\x0d");
        assert_eq!(escaped(b"a\r\r\nb"), "a\\x0d\r\nb");
    }

    #[test]
    fn bidirectional_controls_are_shown_not_obeyed() {
        assert_eq!(
            escaped("abc\u{202e}fdp.exe".as_bytes()),
            "abc\\u{202e}fdp.exe"
        );
        assert_eq!(
            escaped("\u{2066}x\u{2069}".as_bytes()),
            "\\u{2066}x\\u{2069}"
        );
    }

    #[test]
    fn inline_text_never_breaks_the_row() {
        assert_eq!(
            inline(b"a\x1b]0;pwn\x07\nZ\x1b[2J"),
            "a\\x1b]0;pwn\\x07\\x0aZ\\x1b[2J"
        );
        assert_eq!(inline(b"tab\there"), "tab\\x09here");
        assert_eq!(inline("caf\u{e9}".as_bytes()), "caf\u{e9}");
    }

    #[test]
    fn word_scan_agrees_with_byte_scan() {
        let passes = |b: u8| b.is_ascii_graphic() || matches!(b, b' ' | b'\n' | b'\t');
        let base: Vec<u8> = b"GET /index.html HTTP/1.1\nHost: x\n\n".repeat(3);
        for pos in 0..base.len() {
            for bad in [0u8, 0x0d, 0x1b, 0x1f, 0x7f, 0x80, 0xc3, 0xff] {
                let mut data = base.clone();
                data[pos] = bad;
                let expected = data.iter().position(|&b| !passes(b)).unwrap_or(data.len());
                assert_eq!(passing_run(&data), expected, "byte {bad:#x} at {pos}");
            }
        }
        assert_eq!(passing_run(&base), base.len());
        assert_eq!(passing_run(b""), 0);
    }
}
