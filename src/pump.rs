//! The drain loop: ring buffer -> decode -> assemble -> protocols -> outputs, until told
//! to stop, with loss reported as it happens and everything still held flushed at the end.
//! The outputs write on threads of their own (`output`): one that falls behind gets calls
//! without their payload, reported as undelivered to it just as the ring's losses are.

use std::cell::RefCell;
use std::io;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::{ErrorKind, RingBuffer};

use crate::assemble::{Assembler, Counts};
use crate::cgroup::Cgroups;
use crate::clock::monotonic_ns;
use crate::diag;
use crate::event::{Direction, Event};
use crate::kernel::record::decode;
use crate::output::{self, Destination, Outputs, Shortfall};
use crate::proto::{ConnKey, Decoders, Dir, Http};

/// How often the ring buffer is drained when the BPF side does not wake us. Waking
/// user space for every event costs the traced program more than the probes do.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// Output is flushed and losses are reported at least this often.
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// Where events go, shared by the ring-buffer callback and the loop.
pub struct Sink<'o> {
    asm: Assembler,
    stage: Stage<'o>,
    error: Option<io::Error>,
}

/// What an assembled event goes through: the cgroup and protocol stages, then the
/// outputs.
struct Stage<'o> {
    /// The protocol stage; `None` with `--http off`.
    http: Option<Decoders>,
    cgroups: Cgroups,
    out: &'o mut Outputs,
}

impl<'o> Sink<'o> {
    pub fn new(out: &'o mut Outputs, http: bool) -> Self {
        Sink {
            asm: Assembler::new(),
            stage: Stage {
                http: http.then(Decoders::new),
                cgroups: Cgroups::new(),
                out,
            },
            error: None,
        }
    }

    /// The ring-buffer callback: a non-zero return stops the ring's consume.
    pub fn record(&mut self, raw: &[u8]) -> i32 {
        let stage = &mut self.stage;
        if let Err(e) = self.asm.push(decode(raw), &mut |ev| stage.emit(ev)) {
            self.error = Some(e);
            return -1;
        }
        0
    }

    fn tick(&mut self) {
        let stage = &mut self.stage;
        if let Err(e) = self.asm.tick(monotonic_ns(), &mut |ev| stage.emit(ev)) {
            self.error = Some(e);
        }
    }

    /// Calls were lost without knowing whose: no HTTP/2 direction can trust its state.
    fn lost_unknown_calls(&mut self) {
        if let Some(http) = &mut self.stage.http {
            http.gap_all();
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.stage.out.flush() {
            self.error = Some(e);
        }
    }

    /// What the assembler handed on to every output: its undelivered bytes are those
    /// the ring lost.
    pub fn counts(&self) -> Counts {
        self.asm.counts
    }

    /// Each output, stdout first, with what it left out of that.
    pub fn shortfalls(&self) -> Vec<(Destination, Shortfall)> {
        self.stage.out.shortfalls().collect()
    }

    /// Reports what is still held and waits for the outputs to write everything, unless
    /// output already failed; returns the output's error, if any.
    pub fn finish(&mut self) -> Option<io::Error> {
        if self.error.is_none() {
            let stage = &mut self.stage;
            if let Err(e) = self.asm.finish(&mut |ev| stage.emit(ev)) {
                self.error = Some(e);
            }
        }
        // The writer threads end either way; a first error is the one reported.
        if let Err(e) = self.stage.out.finish() {
            self.error.get_or_insert(e);
        }
        for (destination, shortfall) in self.stage.out.shortfalls() {
            let left = shortfall.unwritten;
            if left.events > 0 {
                diag::warn(&format!(
                    "{} was not all written within {} ms at the end (its reader or disk \
                     fell behind): {} events ({} payload bytes) not written, counted \
                     undelivered",
                    destination.name(),
                    output::FINISH_WITHIN.as_millis(),
                    left.events,
                    left.payload
                ));
            }
        }
        self.error.take()
    }
}

impl Stage<'_> {
    /// The cgroup and protocol stages, then the outputs. The decoders see every payload
    /// that reached user space, whichever output has fallen behind.
    fn emit(&mut self, mut ev: Event) -> io::Result<()> {
        ev.cgroup = self.cgroups.get(ev.call.cgroup_id);
        let decoded = self
            .http
            .as_mut()
            .and_then(|decoders| decode_http(decoders, &ev));
        self.out.event(&ev, decoded.as_ref())
    }
}

/// The call's HTTP, per TLS connection object (a socket is not always known) and
/// direction. Bytes cut by --max-buffer-size or lost in the ring break the stream: the
/// decoder is told after the bytes it has.
fn decode_http(decoders: &mut Decoders, ev: &Event) -> Option<Http> {
    let dir = match ev.call.direction {
        Direction::Read => Dir::Read,
        Direction::Write => Dir::Write,
        Direction::Handshake => return None,
    };
    let key = ConnKey {
        pid: ev.call.pid,
        conn: ev.call.tls_conn,
    };
    let http = decoders.decode(key, dir, &ev.data);
    if ev.truncated() > 0 || ev.undelivered > 0 {
        decoders.gap(key, dir);
    }
    http
}

/// What the loop checks between drains.
pub struct Watch<'a> {
    /// True when the run should end (a signal, or the traced process exited).
    pub stop: &'a dyn Fn() -> bool,
    /// Undelivered bytes the kernel alone knows of (calls user space never saw).
    pub unannounced_bytes: &'a dyn Fn() -> u64,
    /// Flush after every drain (a terminal is reading) rather than every 100 ms.
    pub interactive: bool,
}

/// Drains the ring into the sink until `watch.stop` says so or output fails. Returns
/// the undelivered bytes already reported, for the final report.
pub fn drain(ring: &RingBuffer, sink: &RefCell<Sink>, watch: &Watch) -> Result<Reported> {
    let mut reported = Reported::default();
    let mut unannounced = 0;
    let mut last_report = Instant::now();
    while !(watch.stop)() {
        let polled = ring.poll(DRAIN_INTERVAL);
        // The BPF side mostly submits without a wake-up: drain what poll did not.
        let _ = ring.consume();
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
            let now_unannounced = (watch.unannounced_bytes)();
            if now_unannounced > unannounced {
                unannounced = now_unannounced;
                sink.lost_unknown_calls();
            }
            sink.flush();
            reported = report_undelivered(reported, &sink, now_unannounced);
        }
        if sink.error.is_some() {
            break;
        }
    }
    Ok(reported)
}

/// Undelivered bytes already warned about, by cause.
#[derive(Debug, Default, Clone)]
pub struct Reported {
    /// The ring buffer was full.
    pub ring: u64,
    /// Each output fell behind, stdout first.
    pub dropped: Vec<u64>,
}

/// Warns about bytes undelivered since the last report; returns the new totals. The
/// warnings, the INCOMPLETE markers and the summary all count the same bytes.
/// `unannounced` is the kernel's count of bytes of calls user space never saw.
pub fn report_undelivered(reported: Reported, sink: &Sink, unannounced: u64) -> Reported {
    let ring = sink.counts().undelivered_bytes + unannounced;
    if ring > reported.ring {
        diag::undelivered(ring - reported.ring);
    }
    let shortfalls = sink.shortfalls();
    for (i, (destination, shortfall)) in shortfalls.iter().enumerate() {
        let before = reported.dropped.get(i).copied().unwrap_or(0);
        let dropped = shortfall.payload();
        if dropped > before {
            match destination {
                Destination::Stdout => diag::output_behind(dropped - before),
                Destination::PcapFile => diag::pcap_behind(dropped - before),
            }
        }
    }
    Reported {
        ring,
        dropped: shortfalls.iter().map(|(_, s)| s.payload()).collect(),
    }
}
