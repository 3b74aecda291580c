//! A window onto a stream that hands out whole items (a line, an event's payload) as
//! slices of its own buffer. The check runs beside the load and competes with it for the
//! CPUs: read line by line through a BufReader, every byte would be searched by a
//! bytewise loop and copied once more, and a 1 MiB pipe take sixteen reads.

use std::io::{self, Read};

use memchr::memmem;

/// Room for several of the largest payloads (1 MiB), so that moving a partial item back
/// to the front is rare and short; grown when one item is larger.
const INITIAL: usize = 4 << 20;

pub struct Window<R> {
    r: R,
    buf: Vec<u8>,
    /// The bytes not yet handed out are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl<R: Read> Window<R> {
    pub fn new(r: R) -> Self {
        Window {
            r,
            buf: vec![0; INITIAL],
            start: 0,
            end: 0,
        }
    }

    /// The next line with its newline, or what is left at the end of the stream if it
    /// has none; None at the end.
    pub fn line(&mut self) -> io::Result<Option<&[u8]>> {
        let found =
            self.find(|rest, from| memchr::memchr(b'\n', &rest[from..]).map(|at| from + at + 1))?;
        Ok(match found {
            Some(len) => Some(self.take(len)),
            None if self.start < self.end => Some(self.take(self.end - self.start)),
            None => None,
        })
    }

    /// The length of the next item, which `len_of` tells once the bytes not yet handed
    /// out hold all of it (given where its last search left off); None when the stream
    /// ends first.
    pub fn find(
        &mut self,
        mut len_of: impl FnMut(&[u8], usize) -> Option<usize>,
    ) -> io::Result<Option<usize>> {
        let mut searched = 0;
        loop {
            let rest = &self.buf[self.start..self.end];
            if let Some(len) = len_of(rest, searched) {
                return Ok(Some(len));
            }
            searched = rest.len();
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Hands out the next `len` bytes.
    pub fn take(&mut self, len: usize) -> &[u8] {
        let item = &self.buf[self.start..self.start + len];
        self.start += len;
        item
    }

    /// Reads more; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                self.buf.resize(2 * self.buf.len(), 0);
            }
        }
        let n = loop {
            match self.r.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.end += n;
        Ok(n > 0)
    }
}

/// Where `needle` first starts in `haystack`, searching from `from` on (less what a
/// match across the last search's end needs).
pub fn find_from(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let from = from.saturating_sub(needle.len() - 1);
    memmem::find(&haystack[from..], needle).map(|at| from + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `step` bytes a read, as a pipe does.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_come_whole_across_reads_moves_and_growth() {
        let long = vec![b'x'; 3 * INITIAL];
        let mut data = Vec::new();
        for line in [&b"a"[..], b"", &long, b"b", &long[..INITIAL - 1]] {
            data.extend_from_slice(line);
            data.push(b'\n');
        }
        data.extend_from_slice(b"no newline");
        let mut w = Window::new(Trickle {
            data: &data,
            step: 1 << 20,
        });
        let mut got = Vec::new();
        while let Some(line) = w.line().unwrap() {
            got.extend_from_slice(line);
        }
        assert_eq!(got, data);
    }

    #[test]
    fn a_needle_across_two_reads_is_found_once() {
        let data = b"abc----- END----- END";
        let mut w = Window::new(Trickle { data, step: 5 });
        let len = w
            .find(|rest, from| find_from(rest, b"----- END", from).map(|at| at + 9))
            .unwrap();
        assert_eq!(len, Some(12));
        assert_eq!(w.take(12), b"abc----- END");
    }
}
