//! `hexdump -C` rows (sslsniff's --hexdump) back into the bytes they show. Read at fixed
//! places, as the rows are laid out: the check runs beside the load and competes with it
//! for the CPUs, and hexdump is five times the payload.

use anyhow::{bail, ensure, Context, Result};

/// Where the hex cells end and the gutter's `  |` starts.
const CELLS_END: usize = 58;

/// The rows between the DATA markers, without the last newline: 16 bytes a row after an
/// 8-digit offset, then a line with the total length alone. No rows at all is an empty
/// payload.
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
        // The cells, `  |`, a gutter character per byte, `|`.
        let n = line.len().saturating_sub(CELLS_END + 4);
        ensure!(
            (1..=16).contains(&n) && line[CELLS_END..CELLS_END + 3] == *b"  |",
            "a hexdump row of the wrong shape"
        );
        for i in 0..n {
            // " xx" per byte after the offset and its space, one more space after eight.
            let at = 9 + 3 * i + usize::from(i >= 8) + 1;
            bytes.push(hex(&line[at..at + 2])? as u8);
        }
    }
    bail!("a hexdump without its closing length line")
}

fn hex(digits: &[u8]) -> Result<u64> {
    digits.iter().try_fold(0, |value, &d| {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => bail!("{:?} is not lowercase hex", String::from_utf8_lossy(digits)),
        };
        Ok(value << 4 | u64::from(nibble))
    })
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
        assert!(decode(b"").unwrap().is_empty());
    }
}
