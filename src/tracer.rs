//! Loads the BPF programs, attaches them by walking the discovered targets, and drains
//! the ring buffer into the output until told to stop.

use std::cell::RefCell;
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{
    ErrorKind, Link, MapCore, MapFlags, ProgramAttachType, ProgramMut, RingBufferBuilder,
    UprobeMultiOpts, UprobeOpts,
};
use nix::time::{clock_gettime, ClockId};

use crate::bpf::types::{func_info, stats};
use crate::bpf::SslsniffSkelBuilder;
use crate::discover::{Probe, Target};
use crate::event::{Assembler, Counts};
use crate::libs::{self, Role};
use crate::output::Output;
use crate::warn;

/// How often the ring buffer is drained when the BPF side does not wake us. Waking
/// user space for every event costs the traced program more than the probes do.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// Output is flushed and losses are reported at least this often.
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

pub struct Config {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub comm: Option<String>,
    pub max_capture: u64,
    pub ring_size: u32,
    pub handshake: bool,
    /// Attribute calls to sockets (fd, addresses): a hook on every syscall.
    pub conn: bool,
    /// Flush after every drain rather than every REPORT_INTERVAL (a terminal is reading).
    pub interactive: bool,
    pub debug: bool,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub kernel: stats,
    pub counts: Counts,
    /// The reader of our output went away (`sslsniff | head`).
    pub reader_gone: bool,
}

/// Output state shared by the ring-buffer callback and the drain loop.
struct Sink<'o> {
    asm: Assembler,
    out: &'o mut dyn Output,
    error: Option<io::Error>,
}

impl Sink<'_> {
    fn record(&mut self, data: &[u8]) -> i32 {
        let out = &mut *self.out;
        if let Err(e) = self.asm.push(data, &mut |ev| out.event(&ev)) {
            self.error = Some(e);
            return -1;
        }
        0
    }

    fn tick(&mut self, now_ns: u64) -> io::Result<()> {
        let out = &mut *self.out;
        self.asm.tick(now_ns, &mut |ev| out.event(&ev))
    }

    fn finish(&mut self) -> io::Result<()> {
        let out = &mut *self.out;
        self.asm.finish(&mut |ev| out.event(&ev))?;
        out.flush()
    }
}

/// The reader's scheduling priority. Busy traced programs run many threads, and the
/// scheduler shares a CPU per thread: at the default priority one reader thread gets too
/// little of it to drain what 64 busy threads write, and the ring buffer overflows.
const READER_NICE: i32 = -10;

pub fn run(
    cfg: &Config,
    targets: &[Target],
    out: &mut dyn Output,
    stop: &AtomicBool,
) -> Result<Summary> {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, READER_NICE) } != 0 && cfg.debug {
        eprintln!(
            "sslsniff: cannot raise the reader's priority: {}",
            io::Error::last_os_error()
        );
    }
    let mut storage = MaybeUninit::uninit();
    let mut open = SslsniffSkelBuilder::default()
        .open(&mut storage)
        .context("cannot open the BPF object")?;

    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("the BPF object has no read-only data")?;
    rodata.targ_pid = cfg.pid.unwrap_or(0);
    rodata.targ_uid = cfg.uid.unwrap_or(u32::MAX);
    if let Some(comm) = &cfg.comm {
        rodata.filter_comm = true;
        // The kernel keeps 15 bytes of a command name: a longer one matches its start.
        for (dst, src) in rodata.targ_comm.iter_mut().zip(comm.bytes().take(15)) {
            *dst = src as i8;
        }
    }
    rodata.max_capture = cfg.max_capture;
    // Wake the reader early only when the ring is a quarter full; otherwise it drains
    // on its timer.
    rodata.wakeup_watermark = u64::from(cfg.ring_size / 4);
    for (id, lib, f) in libs::all_funcs() {
        let slot = rodata
            .funcs
            .get_mut(id as usize)
            .context("the function table outgrew the BPF side")?;
        *slot = func_info {
            dir: f.role.direction(),
            ret: f.role.ret_convention(),
            nspr_fd: lib.nspr_fd.into(),
            ret_int: f.ret_int.into(),
        };
    }
    open.maps
        .events
        .set_max_entries(cfg.ring_size)
        .context("cannot size the ring buffer")?;
    open.progs.conn_fd.set_autoload(cfg.conn);
    let multi = uprobe_multi_supported();
    if multi {
        open.progs
            .tls_enter
            .set_attach_type(ProgramAttachType::TraceUprobeMulti);
        open.progs
            .tls_exit
            .set_attach_type(ProgramAttachType::TraceUprobeMulti);
    }
    let skel = open
        .load()
        .context("the kernel refused the BPF programs (run with -d for libbpf's log)")?;

    let started = Instant::now();
    let mut links = attach_all(
        &skel.progs.tls_enter,
        &skel.progs.tls_exit,
        cfg,
        targets,
        multi,
    )?;
    if cfg.conn {
        let link = skel
            .progs
            .conn_fd
            .attach()
            .context("cannot attach connection tracking")?;
        links.push(link);
    }
    if cfg.debug {
        eprintln!(
            "sslsniff: {} links attached in {:?}",
            links.len(),
            started.elapsed()
        );
    }
    eprintln!("sslsniff: ready; Ctrl-C to stop");

    let sink = RefCell::new(Sink {
        asm: Assembler::new(),
        out,
        error: None,
    });
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&skel.maps.events, |data| sink.borrow_mut().record(data))
        .context("cannot open the ring buffer")?;
    let ring = builder.build().context("cannot open the ring buffer")?;

    let mut reported = stats::default();
    let mut last_report = Instant::now();
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = ring.poll(DRAIN_INTERVAL) {
            if e.kind() != ErrorKind::Interrupted {
                result = Err(e).context("reading the ring buffer");
                break;
            }
        }
        // The BPF side mostly submits without a wake-up: drain what poll did not.
        let _ = ring.consume();
        let mut sink = sink.borrow_mut();
        if sink.error.is_none() {
            if let Err(e) = sink.tick(monotonic_ns()) {
                sink.error = Some(e);
            }
        }
        if sink.error.is_some() {
            break;
        }
        if cfg.interactive || last_report.elapsed() >= REPORT_INTERVAL {
            last_report = Instant::now();
            if let Err(e) = sink.out.flush() {
                sink.error = Some(e);
                break;
            }
            let now = kernel_stats(&skel);
            report_loss(&reported, &now);
            reported = now;
        }
    }

    // Detach first so that nothing new arrives, then drain what is already queued.
    let detach_started = Instant::now();
    detach(links);
    if cfg.debug {
        eprintln!("sslsniff: detached in {:?}", detach_started.elapsed());
    }
    if sink.borrow().error.is_none() {
        let _ = ring.consume();
    }
    drop(ring);
    let mut sink = sink.into_inner();
    if sink.error.is_none() {
        if let Err(e) = sink.finish() {
            sink.error = Some(e);
        }
    }
    result?;
    let kernel = kernel_stats(&skel);
    report_loss(&reported, &kernel);
    let mut summary = Summary {
        kernel,
        counts: sink.asm.counts,
        reader_gone: false,
    };
    match sink.error {
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => summary.reader_gone = true,
        Some(e) => return Err(e).context("cannot write the output"),
        None => {}
    }
    Ok(summary)
}

/// Each uprobe link waits out an RCU grace period as it goes (about 40 ms here): closing
/// them one after another made exit take 0.4 s with ten links; closed side by side,
/// the waits overlap.
fn detach(links: Vec<Link>) {
    std::thread::scope(|scope| {
        for link in links {
            scope.spawn(move || drop(link));
        }
    });
}

fn attach_all(
    enter: &ProgramMut,
    exit: &ProgramMut,
    cfg: &Config,
    targets: &[Target],
    multi: bool,
) -> Result<Vec<Link>> {
    let pid = cfg.pid.map_or(-1, |p| p as i32);
    let mut links = Vec::new();
    let mut last_error = None;
    for target in targets {
        let probes: Vec<&Probe> = target
            .probes
            .iter()
            .filter(|p| cfg.handshake || !matches!(p.func.role, Role::Handshake(_)))
            .collect();
        if probes.is_empty() {
            continue;
        }
        let attached = if multi {
            attach_multi(enter, exit, pid, target, &probes)
        } else {
            attach_each(enter, exit, pid, target, &probes)
        };
        match attached {
            Ok(mut l) => {
                eprintln!(
                    "sslsniff: tracing {} ({}): {}",
                    target.path.display(),
                    target.lib.name,
                    probes
                        .iter()
                        .map(|p| p.func.name)
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                links.append(&mut l);
            }
            Err(e) => {
                warn!("{e:#}");
                last_error = Some(e);
            }
        }
    }
    if links.is_empty() {
        match last_error {
            Some(e) => return Err(e.context("no TLS library could be traced")),
            None => {
                bail!("no TLS library to trace was found (name one with --extra-lib TYPE:PATH)")
            }
        }
    }
    Ok(links)
}

/// One link for all entry probes of a file and one for all return probes: detaching
/// two multi-links is fast, where one perf-event link per probe makes exit take seconds.
fn attach_multi(
    enter: &ProgramMut,
    exit: &ProgramMut,
    pid: i32,
    target: &Target,
    probes: &[&Probe],
) -> Result<Vec<Link>> {
    let opts = |retprobe| UprobeMultiOpts {
        offsets: probes.iter().map(|p| p.offset as usize).collect(),
        cookies: probes.iter().map(|p| u64::from(p.id)).collect(),
        retprobe,
        ..Default::default()
    };
    let names = probes
        .iter()
        .map(|p| p.func.name)
        .collect::<Vec<_>>()
        .join(", ");
    [(enter, false), (exit, true)]
        .into_iter()
        .map(|(prog, retprobe)| {
            prog.attach_uprobe_multi_with_opts(pid, target.attach_path(), "", opts(retprobe))
                .map_err(|e| attach_error(e, target, &names))
        })
        .collect()
}

fn attach_each(
    enter: &ProgramMut,
    exit: &ProgramMut,
    pid: i32,
    target: &Target,
    probes: &[&Probe],
) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    for probe in probes {
        for (prog, retprobe) in [(enter, false), (exit, true)] {
            let opts = UprobeOpts {
                cookie: u64::from(probe.id),
                retprobe,
                ..Default::default()
            };
            let link = prog
                .attach_uprobe_with_opts(pid, target.attach_path(), probe.offset as usize, opts)
                .map_err(|e| attach_error(e, target, probe.func.name))?;
            links.push(link);
        }
    }
    Ok(links)
}

fn attach_error(e: libbpf_rs::Error, target: &Target, funcs: &str) -> anyhow::Error {
    let hint = if e.kind() == ErrorKind::InvalidInput {
        " (if another tracer, such as bcc's sslsniff, already probes these functions, the kernel \
         refuses a second uprobe with a different ref_ctr_offset: dmesg says 'ref_ctr_offset \
         mismatch'; stop that tracer and retry)"
    } else {
        ""
    };
    anyhow::Error::new(e).context(format!(
        "cannot attach to {} in {}{hint}",
        funcs,
        target.path.display()
    ))
}

/// Multi-uprobe links came with Linux 6.6. SSLSNIFF_NO_UPROBE_MULTI=1 forces the
/// one-link-per-probe path, so that it stays tested.
fn uprobe_multi_supported() -> bool {
    if std::env::var_os("SSLSNIFF_NO_UPROBE_MULTI").is_some() {
        return false;
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0)) >= (6, 6)
}

fn kernel_stats(skel: &crate::bpf::SslsniffSkel) -> stats {
    let mut total = stats::default();
    let Ok(Some(per_cpu)) = skel
        .maps
        .counters
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
    else {
        return total;
    };
    for bytes in per_cpu {
        let mut s = stats::default();
        if plain::copy_from_bytes(&mut s, &bytes).is_ok() {
            total.calls += s.calls;
            total.bytes += s.bytes;
            total.lost_records += s.lost_records;
            total.lost_bytes += s.lost_bytes;
        }
    }
    total
}

fn report_loss(before: &stats, now: &stats) {
    if now.lost_records > before.lost_records {
        warn!(
            "lost {} records ({} bytes): the ring buffer was full (raise --ring-buffer-size or lower --max-buffer-size)",
            now.lost_records - before.lost_records,
            now.lost_bytes - before.lost_bytes
        );
    }
}

/// A clock in nanoseconds; the clocks read here cannot fail on Linux.
fn clock_ns(id: ClockId) -> u64 {
    clock_gettime(id).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    })
}

/// bpf_ktime_get_ns()'s clock.
fn monotonic_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC)
}

/// Wall-clock time minus the monotonic clock that event timestamps use.
pub fn realtime_offset_ns() -> u64 {
    clock_ns(ClockId::CLOCK_REALTIME).saturating_sub(monotonic_ns())
}
