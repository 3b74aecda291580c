//! The drain loop: ring buffer -> decode -> assemble -> protocols -> outputs, until told
//! to stop, with loss reported as it happens and everything still held flushed at the end.

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
use crate::output::Output;
use crate::proto::{ConnKey, Decoders, Dir, Http};

/// How often the ring buffer is drained when the BPF side does not wake us. Waking
/// user space for every event costs the traced program more than the probes do.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// Output is flushed and losses are reported at least this often.
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// Where events go, shared by the ring-buffer callback and the loop.
pub struct Sink<'o> {
    asm: Assembler,
    stages: Stages<'o>,
    error: Option<io::Error>,
}

impl<'o> Sink<'o> {
    pub fn new(out: &'o mut dyn Output, http: bool) -> Self {
        Sink {
            asm: Assembler::new(),
            stages: Stages {
                http: http.then(Decoders::new),
                cgroups: Cgroups::new(),
                out,
            },
            error: None,
        }
    }

    /// The ring-buffer callback: a non-zero return stops the ring's consume.
    pub fn record(&mut self, raw: &[u8]) -> i32 {
        let stages = &mut self.stages;
        if let Err(e) = self.asm.push(decode(raw), &mut |ev| stages.emit(ev)) {
            self.error = Some(e);
            return -1;
        }
        0
    }

    fn tick(&mut self) {
        let stages = &mut self.stages;
        if let Err(e) = self.asm.tick(monotonic_ns(), &mut |ev| stages.emit(ev)) {
            self.error = Some(e);
        }
    }

    /// Calls were lost without knowing whose: no HTTP/2 direction can trust its state.
    fn lost_unknown_calls(&mut self) {
        if let Some(http) = &mut self.stages.http {
            http.gap_all();
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.stages.out.flush() {
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
            let stages = &mut self.stages;
            if let Err(e) = self.asm.finish(&mut |ev| stages.emit(ev)) {
                self.error = Some(e);
            }
        }
        if self.error.is_none() {
            self.flush();
        }
        self.error.take()
    }
}

/// What an assembled event goes through: the cgroup and protocol stages, then the
/// outputs.
struct Stages<'o> {
    /// The protocol stage; `None` with `--http off`.
    http: Option<Decoders>,
    cgroups: Cgroups,
    out: &'o mut dyn Output,
}

impl Stages<'_> {
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
pub fn drain(ring: &RingBuffer, sink: &RefCell<Sink>, watch: &Watch) -> Result<u64> {
    let mut reported = 0;
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

/// Warns about bytes undelivered since the last report; returns the new total. The
/// warnings, the INCOMPLETE markers and the summary all count the same bytes.
/// `unannounced` is the kernel's count of bytes of calls user space never saw.
pub fn report_undelivered(reported: u64, sink: &Sink, unannounced: u64) -> u64 {
    let total = sink.counts().undelivered_bytes + unannounced;
    if total > reported {
        diag::undelivered(total - reported);
    }
    total
}
