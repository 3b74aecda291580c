//! `hexdump -C` rows (sslsniff's --hexdump) back into the bytes they show.

use anyhow::{bail, ensure, Context, Result};

/// The rows between the DATA markers, without the last newline: 16 bytes a row after an
/// 8-digit offset, then a line with the total length alone. No rows at all: an empty payload.
pub fn decode(rows: &[u8]) -> Result<Vec<u8>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut bytes = Vec::with_capacity(rows.len() / 4);
    for line in rows.split(|&b| b == b'\n') {
        let offset = hex(line.get(..8).context("a hexdump row without an offset")?)?;
        ensure!(
            offset == bytes.len() as u64,
            "a hexdump row at offset {offset} after {} bytes",
            bytes.len()
        );
        if line.len() == 8 {
            return Ok(bytes);
        }
        // The offset and a space, then " xx" sixteen times with a space after the eighth.
        let cells = line.get(9..58).context("a hexdump row cut short")?;
        let before = bytes.len();
        for cell in cells.split(|&b| b == b' ').filter(|c| !c.is_empty()) {
            ensure!(cell.len() == 2, "a hexdump cell that is not two digits");
            bytes.push(hex(cell)? as u8);
        }
        ensure!(bytes.len() > before, "a hexdump row without bytes");
    }
    bail!("a hexdump without its closing length line")
}

fn hex(digits: &[u8]) -> Result<u64> {
    let text = std::str::from_utf8(digits)?;
    u64::from_str_radix(text, 16).with_context(|| format!("{text:?} is not hex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_to_their_bytes() {
        let rows =
            b"00000000  47 45 54 20 2f 20 48 54  54 50 2f 31 2e 31 0d 0a  |GET / HTTP/1.1..|\n\
                     00000010  48 6f 73 74                                       |Host|\n\
                     00000014";
        assert_eq!(decode(rows).unwrap(), b"GET / HTTP/1.1\r\nHost");
        assert!(decode(&rows[..rows.len() - 9]).is_err(), "no length line");
        assert!(decode(&rows[80..]).is_err(), "a row missing");
    }
}
