//! Output formats, and the threads that write them. A format appends each event to a
//! batch in memory and knows nothing of BPF records or where the bytes go; each output
//! (stdout, the --pcap file) hands its batches to a writer thread of its own.

mod batch;
mod capture_file;
mod direct_file;
pub mod hexdump;
mod http_json;
mod http_names;
mod http_text;
pub mod json;
pub mod pcap;
pub mod text;
mod writer;

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
use direct_file::DirectFile;
use json::Json;
use pcap::Pcap;
use text::Text;
use writer::{Sink, Writer};

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

/// Which output: stdout, in the chosen format, or the --pcap file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    PcapFile,
}

impl Destination {
    /// The output as messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Destination::Stdout => "stdout",
            Destination::PcapFile => "the --pcap file",
        }
    }
}

/// What one output left out of what it was handed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    /// Payload bytes left out because the output had fallen behind.
    pub dropped: u64,
    /// What it had not written when sslsniff ended.
    pub unwritten: Carried,
}

impl Shortfall {
    /// Payload bytes that never reached this output's sink.
    pub fn payload(&self) -> u64 {
        self.dropped + self.unwritten.payload
    }
}

/// One output: its format, the batch being built, the thread that writes it, and what
/// it left out.
struct Stream {
    destination: Destination,
    format: Box<dyn Formatter>,
    batch: Batch,
    writer: Writer,
    shortfall: Shortfall,
}

impl Stream {
    fn new(
        destination: Destination,
        format: Box<dyn Formatter>,
        head: Batch,
        writer: Writer,
    ) -> Self {
        Stream {
            destination,
            format,
            batch: head,
            writer,
            shortfall: Shortfall::default(),
        }
    }

    /// Appends the call, or when this output has no room for its payload, the call
    /// without it (counted dropped): a slow stdout costs the --pcap file nothing.
    fn event(&mut self, ev: &Event, http: Option<&Http>) -> io::Result<()> {
        if !ev.data.is_empty() && !self.writer.has_room(self.batch.size()) {
            self.shortfall.dropped += ev.data.len() as u64;
            return self.append(&ev.without_payload(), None);
        }
        self.append(ev, http)
    }

    fn append(&mut self, ev: &Event, http: Option<&Http>) -> io::Result<()> {
        // A large call copied starts a batch of its own rather than make this one grow
        // and copy what it holds.
        let copied = ev.data.shared().is_none();
        let batch = &mut self.batch;
        if copied && !batch.is_empty() && batch.len() + ev.data.len() > batch.capacity() {
            self.writer.push(batch)?;
        }
        self.format.event(ev, http, batch)?;
        batch.carry(ev.data.len());
        if batch.size() >= writer::BATCH {
            self.writer.push(batch)?;
        }
        Ok(())
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
    let mut streams = vec![Stream::new(Destination::Stdout, format, head, stdout)];
    if let Some(path) = &cfg.pcap {
        let file = capture_file::create(path, cfg.overwrite)
            .with_context(|| format!("--pcap {}", diag::safe_path(path)))?;
        let mut head = Batch::with_capacity(writer::BATCH);
        let pcap = Pcap::new(clock::realtime_offset_ns(), &mut head);
        let sink: Box<dyn Sink> = match DirectFile::new(file) {
            Ok(direct) => Box::new(direct),
            Err(buffered) => Box::new(buffered),
        };
        let writer = Writer::spawn(sink, cfg.queue_bytes, "sslsniff-pcap", Arc::clone(stopping))
            .context("cannot start the output thread")?;
        streams.push(Stream::new(
            Destination::PcapFile,
            Box::new(pcap),
            head,
            writer,
        ));
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
    /// Hands the call to every output; one that has fallen behind gets it without its
    /// payload.
    pub fn event(&mut self, ev: &Event, http: Option<&Http>) -> io::Result<()> {
        for s in &mut self.0 {
            s.event(ev, http)?;
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
    /// has passed; what each left unwritten goes into its shortfall.
    pub fn finish(&mut self) -> io::Result<()> {
        let flushed = self.flush();
        let mut first = flushed.err();
        for s in &mut self.0 {
            match s.writer.finish() {
                Ok(left) => s.shortfall.unwritten.add(left),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Each output, stdout first, with what it has left out so far.
    pub fn shortfalls(&self) -> impl Iterator<Item = (Destination, Shortfall)> + '_ {
        self.0.iter().map(|s| (s.destination, s.shortfall))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing;

    #[test]
    fn an_output_behind_drops_payloads_the_others_still_get() {
        // Nobody reads the pipe: its 64 KiB queue must stop taking payloads at about
        // 64 KiB, not when the first batch, pushed at 1 MiB, is in the queue. The other
        // output has room for all of them.
        let (read, write) = writer::tests::pipe();
        let stalled = Writer::spawn(write, 64 * 1024, "test", Arc::default()).unwrap();
        let roomy = Writer::spawn(io::sink(), 64 << 20, "test", Arc::default()).unwrap();
        let stream = |destination, writer| {
            let head = Batch::with_capacity(writer::BATCH);
            Stream::new(destination, Box::new(Json::new()), head, writer)
        };
        let mut outputs = Outputs(vec![
            stream(Destination::Stdout, stalled),
            stream(Destination::PcapFile, roomy),
        ]);
        let data = vec![b'x'; 16 * 1024];
        for _ in 0..100 {
            outputs
                .event(&testing::event("SSL_write", &data), None)
                .unwrap();
        }
        let dropped: Vec<u64> = outputs.shortfalls().map(|(_, s)| s.dropped).collect();
        let taken = 100 * data.len() as u64 - dropped[0];
        assert!(taken <= 80 * 1024, "{taken} payload bytes taken");
        assert_eq!(dropped[1], 0);
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
