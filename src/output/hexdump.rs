//! `hexdump -C` rows, for --hexdump.

use std::io::{self, Write};

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
}
