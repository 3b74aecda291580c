//! The BPF lifecycle: configure the programs, load them, attach them to the discovered
//! targets, run the pump until told to stop, detach.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::time::Instant;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, ProgramAttachType, RingBufferBuilder};

use std::os::unix::fs::MetadataExt;

use libbpf_rs::{MapCore, MapFlags};

use crate::attach::{self, Origin, Plan, Programs};
use crate::bpf::types::{file_id, func_info, go_fd_path, stats};
use crate::bpf::{OpenSslsniffSkel, SslsniffSkel, SslsniffSkelBuilder};
use crate::config::Config;
use crate::diag::{self, Summary};
use crate::discover::Target;
use crate::event::{decode_found, FileId, Found};
use crate::follow::{self, Examined, Follow};
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
    targets: &[Target],
    out: &mut dyn Output,
    stop: &dyn Fn() -> bool,
) -> Result<Ended> {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, READER_NICE) } != 0 && cfg.debug {
        diag::notice(&format!(
            "cannot raise the reader's priority: {}",
            io::Error::last_os_error()
        ));
    }
    kernel::check_features()?;
    let multi = kernel::uprobe_multi_supported();
    let mut storage = MaybeUninit::uninit();
    let mut open = SslsniffSkelBuilder::default()
        .open(&mut storage)
        .context("cannot open the BPF object")?;
    configure(&mut open, cfg, multi)?;
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
    };
    let links = RefCell::new(attach(&skel, cfg, targets, plan)?);
    let follower = RefCell::new(Follower::start(&skel, cfg, targets, plan, &links)?);
    let sink = RefCell::new(Sink::new(out, cfg.http));
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&skel.maps.events, |data| sink.borrow_mut().record(data))
        .context("cannot open the ring buffer")?
        .add(&skel.maps.found, |data| follower.borrow_mut().record(data))
        .context("cannot open the ring buffer of files found")?;
    let ring = builder.build().context("cannot open the ring buffer")?;
    let unannounced = || kernel::stats(&skel).unannounced_bytes;
    let follow = || follower.borrow_mut().attach_found(&skel, &links);
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
    attach::detach(links.take(), multi);
    if cfg.debug {
        diag::notice(&format!("detached in {:?}", detach_started.elapsed()));
    }
    let reported = drained?;
    let _ = ring.consume();
    drop(ring);
    let mut sink = sink.into_inner();
    let error = sink.finish();
    pump::report_undelivered(reported, &sink, &watch);
    let summary = sum_up(&kernel::stats(&skel), &sink);
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

/// Files found while running, from the `found` ring to attached.
struct Follower {
    follow: Follow,
    pending: Vec<Found>,
    plan: Plan,
}

impl Follower {
    /// Loads what start-up already examined into the kernel's seen set, attaches the
    /// exec and mmap hooks, and examines every running process's executable (node,
    /// static builds) as if it had just started.
    fn start(
        skel: &SslsniffSkel,
        cfg: &Config,
        targets: &[Target],
        plan: Plan,
        links: &RefCell<Vec<Link>>,
    ) -> Result<Follower> {
        let mut me = Follower {
            follow: Follow::new(cfg.libraries.clone()),
            pending: Vec::new(),
            plan,
        };
        for t in targets {
            if let Ok(m) = std::fs::metadata(t.attach_path()) {
                me.seen(skel, FileId::from_stat(m.dev(), m.ino()));
            }
        }
        if cfg.follow {
            let mut l = links.borrow_mut();
            for prog in [&skel.progs.follow_exec, &skel.progs.follow_mmap] {
                l.push(prog.attach().context("cannot follow new programs")?);
            }
        }
        me.pending = follow::running_executables(cfg.pid);
        me.attach_found(skel, links);
        Ok(me)
    }

    fn record(&mut self, raw: &[u8]) -> i32 {
        self.pending.extend(decode_found(raw));
        0
    }

    /// Tells the kernel not to report the file again.
    fn seen(&mut self, skel: &SslsniffSkel, file: FileId) {
        self.follow.mark(file);
        let key = file_id {
            dev: file.dev,
            ino: file.ino,
        };
        // SAFETY: file_id is two u64s with no padding.
        let key = unsafe { plain::as_bytes(&key) };
        // A full map only means more wake-ups; never a reason to stop.
        let _ = skel.maps.seen_files.update(key, &[1], MapFlags::ANY);
    }

    fn attach_found(&mut self, skel: &SslsniffSkel, links: &RefCell<Vec<Link>>) {
        for found in std::mem::take(&mut self.pending) {
            if let Examined::Targets { targets, display } = self.follow.examine(&found) {
                let origin = Origin {
                    pid: found.pid,
                    ts_ns: found.ts_ns,
                    display: &display,
                };
                for t in &targets {
                    match attach::attach_target(&programs(skel), self.plan, t, Some(&origin)) {
                        Ok(mut l) => links.borrow_mut().append(&mut l),
                        Err(e) => diag::warn(&format!("{e:#}")),
                    }
                }
            }
            self.seen(skel, found.file);
        }
    }
}

/// Filters, limits and the function table go in as read-only data before load.
fn configure(open: &mut OpenSslsniffSkel, cfg: &Config, multi: bool) -> Result<()> {
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
    rodata.track_conn = cfg.conn;
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
    open.progs.follow_mmap.set_autoload(cfg.follow);
    if multi {
        let progs = &mut open.progs;
        for prog in [
            &mut progs.tls_enter,
            &mut progs.tls_exit,
            &mut progs.go_enter,
            &mut progs.go_exit,
        ] {
            prog.set_attach_type(ProgramAttachType::TraceUprobeMulti);
        }
    }
    Ok(())
}

fn attach(skel: &SslsniffSkel, cfg: &Config, targets: &[Target], plan: Plan) -> Result<Vec<Link>> {
    let started = Instant::now();
    let mut links = attach::attach_all(&programs(skel), plan, targets)?;
    if cfg.conn {
        let link = skel
            .progs
            .conn_fd
            .attach()
            .context("cannot attach connection tracking")?;
        links.push(link);
    }
    if cfg.debug {
        diag::notice(&format!(
            "{} links attached in {:?}",
            links.len(),
            started.elapsed()
        ));
    }
    Ok(links)
}

fn programs<'a>(skel: &'a SslsniffSkel) -> Programs<'a> {
    Programs {
        enter: &skel.progs.tls_enter,
        exit: &skel.progs.tls_exit,
        go_enter: &skel.progs.go_enter,
        go_exit: &skel.progs.go_exit,
    }
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
