//! HTTP/1.x heads: the request or status line and the headers, parsed with httparse,
//! and where the body starts.

/// Header lines kept per head; a head with more shows its start line only.
pub const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, target: String },
    Response { status: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub start: StartLine,
    /// The minor version: HTTP/1.0 or HTTP/1.1.
    pub minor: u8,
    /// In the order sent; values are bytes as sent (not always UTF-8).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Where the body starts in this call's bytes; `None` when the head goes on in a
    /// later call (the header lines complete in this call are still listed).
    pub body_offset: Option<usize>,
    /// More than `MAX_HEADERS` header lines: none are listed.
    pub too_many_headers: bool,
}

/// The head that `data` starts with, if it starts with one. A call that continues a
/// body or carries anything else gives `None`.
pub fn parse(data: &[u8]) -> Option<Head> {
    // Heads start with a method (upper-case letters) or "HTTP/": anything else is
    // turned away before httparse runs, which keeps non-HTTP traffic cheap.
    if !data.first().is_some_and(u8::is_ascii_uppercase) {
        return None;
    }
    match head(data)? {
        (head, Some(_)) => Some(head),
        (head, None) if head.too_many_headers => Some(head),
        // The head goes on past this call: close it after its last whole line to list
        // the headers seen so far. A start line cut short is not taken for HTTP.
        (_, None) => {
            let last = data.iter().rposition(|&b| b == b'\n')?;
            let mut closed = Vec::with_capacity(last + 3);
            closed.extend_from_slice(&data[..=last]);
            closed.extend_from_slice(b"\r\n");
            let (mut head, _) = head(&closed)?;
            head.body_offset = None;
            Some(head)
        }
    }
}

/// The head and, when complete, the body offset; `None` when `data` is no HTTP/1 head.
fn head(data: &[u8]) -> Option<(Head, Option<usize>)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    if data.starts_with(b"HTTP/") {
        let mut res = httparse::Response::new(&mut headers);
        let status = res.parse(data);
        let start = StartLine::Response {
            status: res.code?,
            reason: res.reason.unwrap_or_default().to_string(),
        };
        finish(start, res.version?, res.headers, status)
    } else {
        let mut req = httparse::Request::new(&mut headers);
        let status = req.parse(data);
        let start = StartLine::Request {
            method: req.method?.to_string(),
            target: req.path?.to_string(),
        };
        finish(start, req.version?, req.headers, status)
    }
}

fn finish(
    start: StartLine,
    minor: u8,
    headers: &[httparse::Header],
    status: httparse::Result<usize>,
) -> Option<(Head, Option<usize>)> {
    let (body_offset, too_many_headers) = match status {
        Ok(httparse::Status::Complete(offset)) => (Some(offset), false),
        Ok(httparse::Status::Partial) => (None, false),
        // The start line parsed (its fields are set): only the header count is wrong.
        Err(httparse::Error::TooManyHeaders) => (None, true),
        Err(_) => return None,
    };
    let headers = match body_offset {
        Some(_) => headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
        None => Vec::new(),
    };
    let head = Head {
        start,
        minor,
        headers,
        body_offset,
        too_many_headers,
    };
    Some((head, body_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_and_body_offset() {
        let data = b"POST /api?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
        let head = parse(data).unwrap();
        assert_eq!(
            head.start,
            StartLine::Request {
                method: "POST".into(),
                target: "/api?q=1".into()
            }
        );
        assert_eq!(head.minor, 1);
        assert_eq!(
            head.headers,
            vec![
                ("Host".to_string(), b"x".to_vec()),
                ("Content-Length".to_string(), b"2".to_vec())
            ]
        );
        assert_eq!(head.body_offset, Some(data.len() - 2));
    }

    #[test]
    fn response_head() {
        let head = parse(b"HTTP/1.0 404 Not Found\r\nServer: \xffx\r\n\r\n").unwrap();
        assert_eq!(
            head.start,
            StartLine::Response {
                status: 404,
                reason: "Not Found".into()
            }
        );
        assert_eq!(head.minor, 0);
        assert_eq!(
            head.headers,
            vec![("Server".to_string(), b"\xffx".to_vec())]
        );
    }

    #[test]
    fn a_head_cut_by_the_call_lists_its_whole_lines() {
        let head = parse(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: abc").unwrap();
        assert_eq!(head.body_offset, None);
        assert_eq!(head.headers, vec![("Host".to_string(), b"x".to_vec())]);
        // A start line cut short is not recognised.
        assert!(parse(b"GET / HTTP/1.1").is_none());
        assert!(parse(b"GET / HT").is_none());
    }

    #[test]
    fn other_bytes_are_not_http() {
        for data in [
            &b""[..],
            b"hello world\r\n\r\n",
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"{\"json\": 1}",
        ] {
            assert!(parse(data).is_none(), "{data:?}");
        }
    }

    #[test]
    fn too_many_headers_keep_the_start_line() {
        let mut data = b"GET /many HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            data.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        data.extend_from_slice(b"\r\n");
        let head = parse(&data).unwrap();
        assert!(head.too_many_headers && head.headers.is_empty());
        assert!(matches!(head.start, StartLine::Request { ref target, .. } if target == "/many"));
    }
}
