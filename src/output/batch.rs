//! What a format appends its events to: formatted bytes, and between them the large
//! payloads of calls put together from several records, written from where they are.
//! A 1 MiB call is then copied once in user space (its records put together), however
//! many outputs write it: text, JSON and pcapng refer to the same bytes.

use std::io::{self, IoSlice, Write};
use std::ops::{Deref, DerefMut, Range};
use std::sync::Arc;

use crate::event::Payload;

/// Payload pieces shorter than this are copied: a reference costs a slice of its own in
/// the write.
const SHARED_AT_LEAST: usize = 4096;
/// At most this many slices in one writev (IOV_MAX).
const MAX_SLICES: usize = 1024;

#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    /// Payloads written in place, each after the bytes before `at`, in order.
    shared: Vec<Piece>,
    shared_len: usize,
    carried: Carried,
}

/// The events a batch holds and their payload bytes: what is undelivered if the batch
/// is never written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub events: u64,
    pub payload: u64,
}

impl Carried {
    pub fn add(&mut self, other: Carried) {
        self.events += other.events;
        self.payload += other.payload;
    }
}

struct Piece {
    at: usize,
    data: Arc<Vec<u8>>,
    range: Range<usize>,
}

/// Where a batch stood, to go back to.
#[derive(Clone, Copy)]
pub struct Mark {
    bytes: usize,
    shared: usize,
    shared_len: usize,
    carried: Carried,
}

impl Batch {
    pub fn with_capacity(bytes: usize) -> Self {
        Batch {
            bytes: Vec::with_capacity(bytes),
            ..Batch::default()
        }
    }

    /// Bytes to write: the formatted ones and the payloads referred to.
    pub fn size(&self) -> usize {
        self.bytes.len() + self.shared_len
    }

    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// `range` of a call's payload: referred to when the payload is shared and the
    /// piece large, copied otherwise.
    pub fn payload(&mut self, data: &Payload, range: Range<usize>) {
        match data.shared() {
            Some(shared) if range.len() >= SHARED_AT_LEAST => {
                self.shared_len += range.len();
                self.shared.push(Piece {
                    at: self.bytes.len(),
                    data: Arc::clone(shared),
                    range,
                });
            }
            _ => self.bytes.extend_from_slice(&data[range]),
        }
    }

    /// Counts an event appended, with `payload` bytes of payload.
    pub fn carry(&mut self, payload: usize) {
        self.carried.add(Carried {
            events: 1,
            payload: payload as u64,
        });
    }

    pub fn carried(&self) -> Carried {
        self.carried
    }

    pub fn mark(&self) -> Mark {
        Mark {
            bytes: self.bytes.len(),
            shared: self.shared.len(),
            shared_len: self.shared_len,
            carried: self.carried,
        }
    }

    /// Forgets what was appended since `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        self.bytes.truncate(mark.bytes);
        self.shared.truncate(mark.shared);
        self.shared_len = mark.shared_len;
        self.carried = mark.carried;
    }

    pub fn clear(&mut self) {
        self.rollback(Mark {
            bytes: 0,
            shared: 0,
            shared_len: 0,
            carried: Carried::default(),
        });
    }

    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The batch in order, as slices of the bytes and of the payloads referred to.
    fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut slices = Vec::with_capacity(2 * self.shared.len() + 1);
        let mut from = 0;
        for piece in &self.shared {
            slices.push(IoSlice::new(&self.bytes[from..piece.at]));
            slices.push(IoSlice::new(&piece.data[piece.range.clone()]));
            from = piece.at;
        }
        slices.push(IoSlice::new(&self.bytes[from..]));
        slices.retain(|s| !s.is_empty());
        slices
    }

    /// Writes the whole batch to `sink`, in as few writes as the slices allow.
    pub fn write_to(&self, sink: &mut impl Write) -> io::Result<()> {
        let mut slices = self.slices();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = rest.len().min(MAX_SLICES);
            match sink.write_vectored(&rest[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => IoSlice::advance_slices(&mut rest, written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The formatted bytes, for the formats to append to.
impl Deref for Batch {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.bytes
    }
}

impl DerefMut for Batch {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts at most `step` bytes a write, as a pipe may.
    struct Trickle(Vec<u8>, usize);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn shared_payloads_are_written_in_their_place_through_short_writes() {
        let big = Payload::Shared(Arc::new((0..20_000u32).map(|i| i as u8).collect()));
        let small = Payload::Borrowed(b"small");
        let mut batch = Batch::default();
        let mut expected = Vec::new();
        for (i, (data, range)) in [(&big, 0..10_000), (&small, 0..5), (&big, 10_000..20_000)]
            .into_iter()
            .enumerate()
        {
            let head = format!("<{i}>");
            batch.extend_from_slice(head.as_bytes());
            batch.payload(data, range.clone());
            expected.extend_from_slice(head.as_bytes());
            expected.extend_from_slice(&data[range]);
        }
        let mark = batch.mark();
        batch.extend_from_slice(b"undone");
        batch.payload(&big, 0..5000);
        batch.rollback(mark);
        batch.extend_from_slice(b"end");
        expected.extend_from_slice(b"end");
        assert_eq!(batch.size(), expected.len());
        assert_eq!(
            batch.shared.len(),
            2,
            "the small payload and the tail are copied"
        );
        for step in [1, 7, 4096, usize::MAX] {
            let mut sink = Trickle(Vec::new(), step);
            batch.write_to(&mut sink).unwrap();
            assert_eq!(sink.0, expected, "{step} bytes a write");
        }
    }
}
