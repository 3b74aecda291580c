//! The BPF lifecycle: configure the programs, load them, attach them to the discovered
//! targets, run the pump until told to stop, detach.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::time::Instant;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{ProgramAttachType, RingBuffer, RingBufferBuilder};

use crate::attach::{self, Plan};
use crate::bpf::types::{func_info, go_fd_path, stats};
use crate::bpf::{OpenSslsniffSkel, SslsniffSkel, SslsniffSkelBuilder};
use crate::config::Config;
use crate::diag::{self, Summary};
use crate::discover::Target;
use crate::follower::{programs, Follower};
use crate::golang;
use crate::kernel;
use crate::libs;
use crate::output::Output;
use crate::pump::{self, Sink, Watch};

/// The reader's scheduling priority. Busy traced programs run many threads, and the
/// scheduler shares a CPU per thread: at the default priority one reader thread gets too
/// little of it to drain what 64 busy threads write, and the ring buffer overflows.
const READER_NICE: i32 = -10;

/// How a run ended, when it ended well.
pub struct Ended {
    pub summary: Summary,
    /// The reader of our output went away (`sslsniff | head`).
    pub reader_gone: bool,
}

pub fn run(
    cfg: &Config,
    targets: Vec<Target>,
    out: &mut dyn Output,
    stop: &dyn Fn() -> bool,
) -> Result<Ended> {
    raise_priority(cfg.debug);
    kernel::check_features()?;
    let multi = kernel::uprobe_multi_supported();
    let mmap_tracepoint = cfg
        .follow
        .then(|| kernel::syscall_tracepoint_id("sys_exit_mmap"))
        .flatten();
    let mut storage = MaybeUninit::uninit();
    let mut open = SslsniffSkelBuilder::default()
        .open(&mut storage)
        .context("cannot open the BPF object")?;
    configure(&mut open, cfg, multi, mmap_tracepoint.is_some())?;
    let mut skel = open
        .load()
        .context("the kernel refused the BPF programs (run with -d for libbpf's log)")?;
    // Held apart from the skeleton, which the loop's closures borrow.
    let bss = skel.maps.bss_data.take();
    let plan = Plan {
        pid: cfg.pid.map_or(-1, |p| p as i32),
        handshake: cfg.handshake,
        multi,
        debug: cfg.debug,
        mmap_tracepoint,
    };
    let started = attach::attach_all(&programs(&skel), plan, targets)?;
    let follower = RefCell::new(Follower::start(&skel, cfg, plan, started)?);
    if cfg.debug {
        let links = follower.borrow().attached.link_count();
        diag::notice(&format!("{links} links attached"));
    }
    let sink = RefCell::new(Sink::new(out, cfg.http));
    let ring = rings(&skel, &sink, &follower)?;
    let unannounced = || kernel::stats(&skel).unannounced_bytes;
    let follow = || follower.borrow_mut().work(&skel);
    let watch = Watch {
        stop,
        unannounced_bytes: &unannounced,
        interactive: cfg.interactive,
        between_drains: &follow,
    };
    diag::ready();
    let drained = pump::drain(&ring, &sink, &watch);
    // Detach first so that nothing new arrives, then drain what is already queued.
    let detach_started = Instant::now();
    if let Some(bss) = bss {
        bss.stopped = true;
    }
    let mut follower = follower.borrow_mut();
    // The hooks first: they run on every syscall of the machine, and must not wait
    // behind the probes' slow release on older kernels. With multi-uprobe links every
    // link closes within tens of milliseconds, so all close side by side.
    let mut hooks = follower.attached.take_hooks();
    let probes = follower.attached.take_links();
    if multi {
        hooks.extend(probes);
        attach::detach(hooks, true);
    } else {
        attach::detach(hooks, true);
        attach::detach(probes, false);
    }
    drop(follower);
    if cfg.debug {
        diag::notice(&format!("detached in {:?}", detach_started.elapsed()));
    }
    let reported = drained?;
    let _ = ring.consume();
    drop(ring);
    wind_up(sink.into_inner(), reported, &skel)
}

/// The reader runs at READER_NICE; failing that (no CAP_SYS_NICE) is not fatal.
fn raise_priority(debug: bool) {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, READER_NICE) } != 0 && debug {
        diag::notice(&format!(
            "cannot raise the reader's priority: {}",
            io::Error::last_os_error()
        ));
    }
}

/// The data ring into the sink, the ring of files found into the follower.
fn rings<'a>(
    skel: &'a SslsniffSkel,
    sink: &'a RefCell<Sink>,
    follower: &'a RefCell<Follower>,
) -> Result<RingBuffer<'a>> {
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&skel.maps.events, |data| sink.borrow_mut().record(data))
        .context("cannot open the ring buffer")?
        .add(&skel.maps.found, |data| follower.borrow_mut().record(data))
        .context("cannot open the ring buffer of files found")?;
    builder.build().context("cannot open the ring buffer")
}

/// Reports what is still held, the last undelivered bytes and the summary.
fn wind_up(mut sink: Sink, reported: u64, skel: &SslsniffSkel) -> Result<Ended> {
    let error = sink.finish();
    let kernel = kernel::stats(skel);
    pump::report_undelivered(reported, &sink, kernel.unannounced_bytes);
    let summary = sum_up(&kernel, &sink);
    match error {
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Ended {
            summary,
            reader_gone: true,
        }),
        Some(e) => Err(e).context("cannot write the output"),
        None => Ok(Ended {
            summary,
            reader_gone: false,
        }),
    }
}

/// Filters, limits and the function table go in as read-only data before load.
fn configure(
    open: &mut OpenSslsniffSkel,
    cfg: &Config,
    multi: bool,
    mmap_tracepoint: bool,
) -> Result<()> {
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("the BPF object has no read-only data")?;
    rodata.targ_pid = cfg.pid.unwrap_or(0);
    rodata.targ_uid = cfg.uid.unwrap_or(u32::MAX);
    if let Some(comm) = &cfg.comm {
        rodata.filter_comm = true;
        for (dst, src) in rodata.targ_comm.iter_mut().zip(comm.bytes()) {
            *dst = src as i8;
        }
    }
    rodata.max_capture = cfg.max_capture;
    // The BPF side's default is its largest chunk; a quarter of a ring (a power of two
    // of at least a page) is a power of two too.
    rodata.chunk_size = rodata.chunk_size.min(cfg.ring_size / 4);
    rodata.track_conn = cfg.conn;
    rodata.trace_handshakes = cfg.handshake;
    for (slot, path) in rodata.go_fd_paths.iter_mut().zip(golang::fd_paths()) {
        *slot = go_fd_path {
            conn: path.conn,
            itab_hash: path.itab_hash,
            tcp_conn_fd: path.tcp_conn_fd,
            netfd_sysfd: path.netfd_sysfd,
            tcp_conn_hash: path.tcp_conn_hash,
            pad: 0,
        };
    }
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
            ret: lib.ret_convention(f),
            nspr_fd: lib.nspr_fd.into(),
            ret_int: f.ret_int.into(),
        };
    }
    open.maps
        .events
        .set_max_entries(cfg.ring_size)
        .context("cannot size the ring buffer")?;
    open.progs.conn_fd.set_autoload(cfg.conn);
    open.progs.follow_exec.set_autoload(cfg.follow);
    // The BTF hook is loaded even when the tracepoint may be used: it is the way back if
    // attaching to the tracepoint fails.
    open.progs.follow_mmap.set_autoload(cfg.follow);
    open.progs
        .follow_mmap_tp
        .set_autoload(cfg.follow && mmap_tracepoint);
    if multi {
        let progs = &mut open.progs;
        for prog in [
            &mut progs.tls_enter,
            &mut progs.tls_exit,
            &mut progs.go_enter,
            &mut progs.go_exit,
            &mut progs.aead_seal,
            &mut progs.aead_seal_scatter,
            &mut progs.aead_open,
            &mut progs.aead_open_gather,
            &mut progs.aead_open_exit,
        ] {
            prog.set_attach_type(ProgramAttachType::TraceUprobeMulti);
        }
    }
    Ok(())
}

fn sum_up(kernel: &stats, sink: &Sink) -> Summary {
    let counts = sink.counts();
    Summary {
        calls: kernel.calls,
        events: counts.events,
        captured_bytes: counts.bytes,
        truncated_bytes: counts.truncated_bytes,
        undelivered_bytes: counts.undelivered_bytes + kernel.unannounced_bytes,
        unannounced_bytes: kernel.unannounced_bytes,
        malformed_records: counts.malformed,
    }
}
