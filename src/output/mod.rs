//! Output formats, and the threads that write them. A format appends each event to a
//! batch in memory and knows nothing of BPF records or where the bytes go; each output
//! (stdout, the --pcap file) hands its batches to a writer thread of its own.

mod batch;
mod capture_file;
pub mod hexdump;
mod http_json;
mod http_names;
mod http_text;
pub mod json;
pub mod pcap;
pub mod text;
mod writer;

use std::cmp;
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::clock;
use crate::config::{self, Format};
use crate::diag;
use crate::event::Event;
use crate::proto::Http;
use json::Json;
use pcap::Pcap;
use text::Text;
use writer::Writer;

pub use batch::{Batch, Carried};
pub use writer::FINISH_WITHIN;

/// A format: appends each event, a call with its HTTP when the protocol stage decoded
/// it, to `out`.
pub trait Formatter: Send {
    fn event(&mut self, ev: &Event, http: Option<&Http>, out: &mut Batch) -> io::Result<()>;
}

/// `ip:port` or `[ipv6]:port`, as SocketAddr's Display writes it. IPv4 by hand: through
/// `fmt`, the two addresses of a JSON line cost as much as all its other fields.
pub fn write_addr(out: &mut Vec<u8>, a: SocketAddr) {
    let SocketAddr::V4(v4) = a else {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{a}");
        return;
    };
    let mut digits = itoa::Buffer::new();
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(digits.format(octet).as_bytes());
    }
    out.push(b':');
    out.extend_from_slice(digits.format(v4.port()).as_bytes());
}

/// One output: its format, the batch being built, and the thread that writes it.
struct Stream {
    format: Box<dyn Formatter>,
    batch: Batch,
    writer: Writer,
}

impl Stream {
    fn new(format: Box<dyn Formatter>, head: Batch, writer: Writer) -> Self {
        Stream {
            format,
            batch: head,
            writer,
        }
    }
}

/// Every output, fed the same events: stdout in the chosen format, and the --pcap file
/// if asked for.
pub struct Outputs(Vec<Stream>);

/// stdout in the chosen format, and the --pcap file if asked for; `stopping` is the flag
/// the stop signals set, upon which no output waits for room.
pub fn open(cfg: &config::Output, stopping: &Arc<AtomicBool>) -> Result<Outputs> {
    let mut head = Batch::with_capacity(writer::BATCH);
    let format: Box<dyn Formatter> = match cfg.format {
        Format::Text => Box::new(Text::new(cfg.text, &mut head)),
        Format::Json => Box::new(Json::new()),
        Format::Pcap => {
            if io::stdout().is_terminal() {
                bail!("--pcap -: stdout is a terminal; send the capture to a file or a pipe");
            }
            Box::new(Pcap::new(clock::realtime_offset_ns(), &mut head))
        }
    };
    let stdout = Writer::spawn(
        raw_stdout(),
        cfg.queue_bytes,
        "sslsniff-stdout",
        Arc::clone(stopping),
    )
    .context("cannot start the output thread")?;
    let mut streams = vec![Stream::new(format, head, stdout)];
    if let Some(path) = &cfg.pcap {
        let file = capture_file::create(path, cfg.overwrite)
            .with_context(|| format!("--pcap {}", diag::safe_path(path)))?;
        let mut head = Batch::with_capacity(writer::BATCH);
        let pcap = Pcap::new(clock::realtime_offset_ns(), &mut head);
        let writer = Writer::spawn(file, cfg.queue_bytes, "sslsniff-pcap", Arc::clone(stopping))
            .context("cannot start the output thread")?;
        streams.push(Stream::new(Box::new(pcap), head, writer));
    }
    Ok(Outputs(streams))
}

/// File descriptor 1 without std's line buffering: std's stdout searched every 64 KiB
/// block for its last newline and held the rest back, 4% of the reader's time at
/// 64 KiB payloads, on output that is batched here already. Never closed: it is not
/// ours to close, and nothing else in sslsniff writes to stdout.
fn raw_stdout() -> &'static File {
    // SAFETY: fd 1 is open for the life of the process (a closed stdout fails the
    // writes, as it would through std); ManuallyDrop keeps this File from closing it.
    let file = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    &*Box::leak(Box::new(file))
}

impl Outputs {
    /// Whether every output can take a payload now. When one cannot, the call goes on
    /// without its payload, counted as undelivered (see `pump`).
    pub fn has_room(&self) -> bool {
        self.0.iter().all(|s| s.writer.has_room(s.batch.size()))
    }

    pub fn event(&mut self, ev: &Event, http: Option<&Http>) -> io::Result<()> {
        for s in &mut self.0 {
            // A large call copied starts a batch of its own rather than make this one
            // grow and copy what it holds.
            let copied = ev.data.shared().is_none();
            if copied && !s.batch.is_empty() && s.batch.len() + ev.data.len() > s.batch.capacity() {
                s.writer.push(&mut s.batch)?;
            }
            s.format.event(ev, http, &mut s.batch)?;
            s.batch.carry(ev.data.len());
            if s.batch.size() >= writer::BATCH {
                s.writer.push(&mut s.batch)?;
            }
        }
        Ok(())
    }

    /// Hands what each output holds to its writer.
    pub fn flush(&mut self) -> io::Result<()> {
        for s in &mut self.0 {
            if !s.batch.is_empty() {
                s.writer.push(&mut s.batch)?;
            }
        }
        Ok(())
    }

    /// Flushes, and waits until every output has written everything or `FINISH_WITHIN`
    /// has passed; returns the most that one output left unwritten.
    pub fn finish(&mut self) -> io::Result<Carried> {
        let flushed = self.flush();
        let mut first = flushed.err();
        let mut unwritten = Carried::default();
        for s in &mut self.0 {
            match s.writer.finish() {
                // One output's whole account, not the largest of each field.
                Ok(left) => unwritten = cmp::max_by_key(unwritten, left, |c| (c.events, c.payload)),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(unwritten), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing;

    #[test]
    fn the_batch_being_built_counts_against_the_queue() {
        // Nobody reads the pipe; a 64 KiB queue must stop taking payloads at about
        // 64 KiB, not when the first batch, pushed at 1 MiB, is in the queue.
        let (read, write) = writer::tests::pipe();
        let writer = Writer::spawn(write, 64 * 1024, "test", Arc::default()).unwrap();
        let head = Batch::with_capacity(writer::BATCH);
        let mut outputs = Outputs(vec![Stream::new(Box::new(Json::new()), head, writer)]);
        let data = vec![b'x'; 16 * 1024];
        let mut taken = 0;
        while outputs.has_room() && taken < 100 {
            outputs
                .event(&testing::event("SSL_write", &data), None)
                .unwrap();
            taken += 1;
        }
        assert!(taken * data.len() <= 80 * 1024, "{taken} payloads taken");
        // The pipe's write fails at once: the end need not wait for it.
        drop(read);
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [
            "127.0.0.1:443",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:8443",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            write_addr(&mut out, a);
            assert_eq!(String::from_utf8(out).unwrap(), a.to_string());
        }
    }
}
