//! HTTP/2 bytes built by hand, for the tests of the decoders and of what renders them.

use super::http2::{flag, kind, Reader};
use super::Http;

/// One frame: its 9-byte header, then the payload.
pub fn raw_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block of literals without indexing (no table involved).
pub fn literals(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0x00);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// What a reader makes of `data`, as the protocol stage hands it on.
pub fn h2(reader: &mut Reader, data: &[u8]) -> Http {
    Http::H2(reader.feed(data).unwrap())
}

/// A late-attach request: :method GET (static), :path and :authority literals, an
/// entry never seen (index 70), then its body.
pub fn request() -> Vec<u8> {
    let mut block = vec![0x82, 0x87];
    block.extend(literals(&[
        (":path", "/api/v1/crates?q=serde"),
        (":authority", "x:8443"),
    ]));
    block.push(0x80 | 70);
    let mut d = raw_frame(kind::HEADERS, flag::END_HEADERS, 1, &block);
    d.extend(raw_frame(kind::DATA, flag::END_STREAM, 1, b"{\"a\":1}"));
    d
}
