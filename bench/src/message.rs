//! The messages the load sends: unique and printable ASCII, so that a captured payload
//! names the call it came from, passes sslsniff's escaping unchanged, and can be checked
//! byte for byte.

use std::io::Write;

/// `BENCH`, the run id in 8 hex digits, `-`, the call's index in 8 digits, `-`.
const HEADER_LEN: usize = 23;
/// The smallest message: a header and nothing after it.
pub const MIN_SIZE: usize = HEADER_LEN;
/// Indexes have 8 digits.
pub const MAX_CALLS: u64 = 100_000_000;
/// 62 characters: a chunk of sslsniff's (a power of two of bytes) is no multiple of 62, so a
/// payload put together at a wrong offset cannot match.
const FILLER: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Clone)]
pub struct Messages {
    run_id: u32,
    /// Every message: the filler, under a header written per call.
    template: Vec<u8>,
}

impl Messages {
    pub fn new(run_id: u32, size: usize) -> Self {
        assert!(size >= MIN_SIZE, "messages are at least {MIN_SIZE} bytes");
        let template = (0..size).map(|j| FILLER[j % FILLER.len()]).collect();
        Messages { run_id, template }
    }

    /// A buffer holding message 0; `set_index` turns it into any other.
    pub fn buffer(&self) -> Vec<u8> {
        let mut buf = self.template.clone();
        self.set_index(&mut buf, 0);
        buf
    }

    /// Rewrites only the header, so that making a message costs the load next to nothing.
    pub fn set_index(&self, buf: &mut [u8], i: u64) {
        debug_assert!(i < MAX_CALLS);
        let mut header = &mut buf[..HEADER_LEN];
        write!(header, "BENCH{:08x}-{i:08}-", self.run_id).expect("the header is HEADER_LEN bytes");
    }

    /// The index of the message that `payload` is exactly, if it is one of this run's.
    pub fn identify(&self, payload: &[u8]) -> Option<u64> {
        if payload.len() != self.template.len()
            || payload[HEADER_LEN..] != self.template[HEADER_LEN..]
        {
            return None;
        }
        let digits = payload.get(14..22)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let i = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let mut expected = [0; HEADER_LEN];
        self.set_index(&mut expected, i);
        (payload[..HEADER_LEN] == expected).then_some(i)
    }

    /// Whether `bytes` are what the reader receives at byte `pos` of the stream of all
    /// `n` messages sent one after the other.
    pub fn continues_stream(&self, mut pos: u64, mut bytes: &[u8], n: u64) -> bool {
        let size = self.template.len() as u64;
        let mut header = [0; HEADER_LEN];
        while !bytes.is_empty() {
            let (i, off) = (pos / size, (pos % size) as usize);
            if i >= n {
                return false;
            }
            let k = bytes.len().min(size as usize - off);
            let (here, rest) = bytes.split_at(k);
            self.set_index(&mut header, i);
            let head_end = HEADER_LEN.clamp(off, off + k);
            let (in_header, in_filler) = here.split_at(head_end - off);
            if in_header != header.get(off..head_end).unwrap_or_default()
                || in_filler != &self.template[head_end..off + k]
            {
                return false;
            }
            bytes = rest;
            pos += k as u64;
        }
        true
    }
}

/// A message size as people write it: 100 B, 4 KiB, 1 MiB.
pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_unique_printable_and_recognised() {
        let m = Messages::new(0xbeef, 100);
        let mut buf = m.buffer();
        m.set_index(&mut buf, 42);
        assert!(buf.starts_with(b"BENCH0000beef-00000042-NOPQ"));
        assert!(buf.iter().all(|b| b.is_ascii_graphic()));
        assert_eq!(m.identify(&buf), Some(42));
        assert_eq!(Messages::new(0xbeee, 100).identify(&buf), None);
    }

    #[test]
    fn any_cut_of_the_stream_is_recognised_at_its_place_only() {
        let m = Messages::new(3, 40);
        let mut stream = Vec::new();
        for i in 0..4 {
            let mut msg = m.buffer();
            m.set_index(&mut msg, i);
            stream.extend_from_slice(&msg);
        }
        for start in 0..stream.len() {
            for end in start..=stream.len().min(start + 70) {
                let piece = &stream[start..end];
                assert!(m.continues_stream(start as u64, piece, 4), "{start}..{end}");
                if end > start {
                    let mut bad = piece.to_vec();
                    bad[end - start - 1] = b'!';
                    assert!(!m.continues_stream(start as u64, &bad, 4), "{start}..{end}");
                }
            }
        }
        assert!(
            !m.continues_stream(0, &stream[..80], 1),
            "past the last message"
        );
    }

    #[test]
    fn damaged_payloads_are_not_recognised() {
        let m = Messages::new(1, 40_000);
        let good = m.buffer();
        assert_eq!(m.identify(&good), Some(0));
        assert_eq!(m.identify(&good[..39_999]), None);
        let mut shifted = good.clone();
        shifted.copy_within(16_384..39_999, 16_385);
        assert_eq!(m.identify(&shifted), None);
        let mut bad_digit = good;
        bad_digit[21] = b'x';
        assert_eq!(m.identify(&bad_digit), None);
    }
}
