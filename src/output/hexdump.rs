//! `hexdump -C` rows, for --hexdump.

use std::io::Write;

const HEX: &[u8; 16] = b"0123456789abcdef";
/// A row after its offset: the cells (" xx" sixteen times, one more space after the
/// eighth, after the offset's own space), `  |`, the gutter and `|` with the newline.
const CELLS: usize = 1 + 16 * 3 + 1;
const REST: usize = CELLS + 3 + 16 + 2;

/// `hexdump -C` rows: offset, 16 bytes in hex split 8+8, and an ASCII gutter. Each row
/// is laid out in place: formatting every byte through `write!` made --hexdump the
/// slowest output by far.
pub fn hexdump(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len().div_ceil(16) * (8 + REST) + 9);
    for (row, bytes) in data.chunks(16).enumerate() {
        offset(out, row * 16);
        let mut rest = [b' '; REST];
        for (i, &b) in bytes.iter().enumerate() {
            let at = 3 * i + usize::from(i >= 8) + 2;
            rest[at] = HEX[usize::from(b >> 4)];
            rest[at + 1] = HEX[usize::from(b & 0xf)];
        }
        rest[CELLS + 2] = b'|';
        for (g, &b) in rest[CELLS + 3..].iter_mut().zip(bytes) {
            *g = if b.is_ascii_graphic() || b == b' ' {
                b
            } else {
                b'.'
            };
        }
        let end = CELLS + 3 + bytes.len();
        rest[end] = b'|';
        rest[end + 1] = b'\n';
        out.extend_from_slice(&rest[..end + 2]);
    }
    if !data.is_empty() {
        offset(out, data.len());
        out.push(b'\n');
    }
}

/// At least 8 lowercase hex digits, as `%08x` prints them.
fn offset(out: &mut Vec<u8>, value: usize) {
    if value >> 32 != 0 {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{value:08x}");
        return;
    }
    out.extend((0..8).rev().map(|i| HEX[(value >> (4 * i)) & 0xf]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_matches_hexdump_c() {
        let mut out = Vec::new();
        hexdump(&mut out, b"GET / HTTP/1.1\r\nHost");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "00000000  47 45 54 20 2f 20 48 54  54 50 2f 31 2e 31 0d 0a  |GET / HTTP/1.1..|\n\
             00000010  48 6f 73 74                                       |Host|\n\
             00000014\n"
        );
    }

    /// The rows as `write!` made them before they were laid out in place.
    fn reference(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (row, bytes) in data.chunks(16).enumerate() {
            write!(out, "{:08x} ", row * 16).unwrap();
            for i in 0..16 {
                if i == 8 {
                    out.push(b' ');
                }
                match bytes.get(i) {
                    Some(b) => write!(out, " {b:02x}").unwrap(),
                    None => out.extend_from_slice(b"   "),
                }
            }
            out.extend_from_slice(b"  |");
            out.extend(bytes.iter().map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b
                } else {
                    b'.'
                }
            }));
            out.extend_from_slice(b"|\n");
        }
        if !data.is_empty() {
            writeln!(out, "{:08x}", data.len()).unwrap();
        }
        out
    }

    #[test]
    fn every_length_and_byte_is_laid_out_as_before() {
        let data: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 255, 256, 700] {
            let mut out = Vec::new();
            hexdump(&mut out, &data[..len]);
            assert_eq!(out, reference(&data[..len]), "{len} bytes");
        }
        let mut wide = Vec::new();
        offset(&mut wide, 0x1_2345_6789);
        assert_eq!(wide, b"123456789");
    }
}
