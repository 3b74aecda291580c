//! The drain loop: ring buffer -> decode -> assemble -> outputs, until told to stop, with
//! loss reported as it happens and everything still held flushed at the end.

use std::cell::RefCell;
use std::io;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::{ErrorKind, RingBuffer};
use nix::time::{clock_gettime, ClockId};

use crate::assemble::{Assembler, Counts};
use crate::diag;
use crate::event::decode;
use crate::output::Output;

/// How often the ring buffer is drained when the BPF side does not wake us. Waking
/// user space for every event costs the traced program more than the probes do.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// Output is flushed and losses are reported at least this often.
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// Where events go, shared by the ring-buffer callback and the loop.
pub struct Sink<'o> {
    asm: Assembler,
    out: &'o mut dyn Output,
    error: Option<io::Error>,
}

impl<'o> Sink<'o> {
    pub fn new(out: &'o mut dyn Output) -> Self {
        Sink {
            asm: Assembler::new(),
            out,
            error: None,
        }
    }

    /// The ring-buffer callback: a non-zero return stops the ring's consume.
    pub fn record(&mut self, raw: &[u8]) -> i32 {
        let out = &mut *self.out;
        if let Err(e) = self.asm.push(decode(raw), &mut |ev| out.event(&ev)) {
            self.error = Some(e);
            return -1;
        }
        0
    }

    fn tick(&mut self) {
        let out = &mut *self.out;
        if let Err(e) = self.asm.tick(monotonic_ns(), &mut |ev| out.event(&ev)) {
            self.error = Some(e);
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.error = Some(e);
        }
    }

    pub fn counts(&self) -> Counts {
        self.asm.counts
    }

    /// Reports what is still held and flushes, unless output already failed; returns
    /// the output's error, if any.
    pub fn finish(&mut self) -> Option<io::Error> {
        if self.error.is_none() {
            let out = &mut *self.out;
            if let Err(e) = self.asm.finish(&mut |ev| out.event(&ev)) {
                self.error = Some(e);
            }
        }
        if self.error.is_none() {
            self.flush();
        }
        self.error.take()
    }
}

/// What the loop checks between drains.
pub struct Watch<'a> {
    /// True when the run should end (a signal, or the traced process exited).
    pub stop: &'a dyn Fn() -> bool,
    /// Undelivered bytes the kernel alone knows of (calls user space never saw).
    pub unannounced_bytes: &'a dyn Fn() -> u64,
    /// Flush after every drain (a terminal is reading) rather than every 100 ms.
    pub interactive: bool,
    /// Work that waits for each drain (attaching files found while running).
    pub between_drains: &'a dyn Fn(),
}

/// Drains the ring into the sink until `watch.stop` says so or output fails. Returns
/// the undelivered bytes already reported, for the final report.
pub fn drain(ring: &RingBuffer, sink: &RefCell<Sink>, watch: &Watch) -> Result<u64> {
    let mut reported = 0;
    let mut last_report = Instant::now();
    while !(watch.stop)() {
        let polled = ring.poll(DRAIN_INTERVAL);
        // The BPF side mostly submits without a wake-up: drain what poll did not.
        let _ = ring.consume();
        (watch.between_drains)();
        let mut sink = sink.borrow_mut();
        if sink.error.is_some() {
            // The callback's -1 comes back from poll as a bogus errno; the output's own
            // error is the real one, reported by the caller.
            break;
        }
        if let Err(e) = polled {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e).context("reading the ring buffer");
            }
        }
        sink.tick();
        if watch.interactive || last_report.elapsed() >= REPORT_INTERVAL {
            last_report = Instant::now();
            sink.flush();
            reported = report_undelivered(reported, &sink, watch);
        }
        if sink.error.is_some() {
            break;
        }
    }
    Ok(reported)
}

/// Warns about bytes undelivered since the last report; returns the new total. The
/// warnings, the INCOMPLETE markers and the summary all count the same bytes.
pub fn report_undelivered(reported: u64, sink: &Sink, watch: &Watch) -> u64 {
    let total = sink.counts().undelivered_bytes + (watch.unannounced_bytes)();
    if total > reported {
        diag::undelivered(total - reported);
    }
    total
}

/// A clock in nanoseconds; the clocks read here cannot fail on Linux.
fn clock_ns(id: ClockId) -> u64 {
    clock_gettime(id).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    })
}

/// bpf_ktime_get_ns()'s clock.
pub fn monotonic_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC)
}

/// Wall-clock time minus the monotonic clock that event timestamps use.
pub fn realtime_offset_ns() -> u64 {
    clock_ns(ClockId::CLOCK_REALTIME).saturating_sub(monotonic_ns())
}
