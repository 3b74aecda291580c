//! Output formats. Each takes decoded events and writes them to a `Write`; none knows
//! about BPF records or where the bytes go.

mod capture_file;
pub mod hexdump;
mod http_json;
mod http_names;
mod http_text;
pub mod json;
pub mod pcap;
pub mod text;

use std::fs::File;
use std::io::{self, BufWriter};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

use anyhow::{Context, Result};

use crate::clock;
use crate::config::{self, Format};
use crate::diag;
use crate::event::Event;
use crate::proto::Http;
use json::Json;
use pcap::Pcap;
use text::Text;

/// A sink of events: each is a call, with its HTTP when the protocol stage decoded it.
pub trait Output {
    fn event(&mut self, ev: &Event, http: Option<&Http>) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// stdout in the chosen format, and the --pcap file if asked for.
pub fn open(cfg: &config::Output) -> Result<Tee> {
    let stdout = BufWriter::with_capacity(1 << 16, raw_stdout());
    let mut outputs: Vec<Box<dyn Output>> = vec![match cfg.format {
        Format::Text => Box::new(Text::new(stdout, cfg.text).context("cannot write the output")?),
        Format::Json => Box::new(Json::new(stdout)),
    }];
    if let Some(path) = &cfg.pcap {
        let file = capture_file::create(path, cfg.overwrite)
            .with_context(|| format!("--pcap {}", diag::safe_path(path)))?;
        let pcap = Pcap::new(BufWriter::new(file), clock::realtime_offset_ns())
            .with_context(|| format!("cannot write {}", diag::safe_path(path)))?;
        outputs.push(Box::new(pcap));
    }
    Ok(Tee(outputs))
}

/// File descriptor 1 without std's line buffering: std's stdout searched every 64 KiB
/// block for its last newline and held the rest back, 4% of the reader's time at
/// 64 KiB payloads, on output that is buffered here already. Never closed: it is not
/// ours to close, and nothing else in sslsniff writes to stdout.
fn raw_stdout() -> &'static File {
    // SAFETY: fd 1 is open for the life of the process (a closed stdout fails the
    // writes, as it would through std); ManuallyDrop keeps this File from closing it.
    let file = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    &*Box::leak(Box::new(file))
}

/// Several outputs fed the same events (stdout and a --pcap file).
pub struct Tee(pub Vec<Box<dyn Output>>);

impl Output for Tee {
    fn event(&mut self, ev: &Event, http: Option<&Http>) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|o| o.event(ev, http))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|o| o.flush())
    }
}
