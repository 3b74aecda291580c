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
/// 62 characters: a chunk of sslsniff's (16384 bytes) is no multiple of 62, so a
/// payload put together at a wrong offset cannot match.
const FILLER: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

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
