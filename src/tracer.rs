//! The run, start to stop: find the files, load the programs, attach, drain the ring
//! while the follower attaches what programs start or map, then detach and sum up. The
//! steps are the modules'; this only puts them in order.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::{RingBuffer, RingBufferBuilder};

use crate::config::Config;
use crate::diag::{self, warning, Delivered, Summary};
use crate::discover::{self, Target};
use crate::follow::{self, Follower, Following, SharedRegistry};
use crate::kernel::{self, Features, Hook, Kernel, Load};
use crate::output::{self, Destination, Outputs, Shortfall};
use crate::probes::{Registry, Scope};
use crate::procfs;
use crate::pump::{self, Sink, Watch};

/// The reader's scheduling priority. Busy traced programs run many threads, and the
/// scheduler shares a CPU per thread: at the default priority one reader thread gets too
/// little of it to drain what 64 busy threads write, and the ring buffer overflows.
const READER_NICE: i32 = -10;

/// Runs until `stop` is set (or the process of -p exits); the summary, or None when the
/// reader of our output went away (`sslsniff | head`), which ends the run quietly.
pub fn run(cfg: &Config, stop: &Arc<AtomicBool>) -> Result<Option<Summary>> {
    if !procfs::has_cap_sys_admin()? {
        bail!("needs root (CAP_SYS_ADMIN) to attach uprobes; run it with sudo");
    }
    let watch = cfg.filter.pid.map(watch_process).transpose()?;
    set_libbpf_log(cfg.debug);
    let features = Features::probe()?;
    diag::kernel(&features.mechanisms(), cfg.debug);
    if cfg.check_kernel {
        return check_kernel(features).map(|()| None);
    }
    discover::set_debug_files(&cfg.discovery.debug_files)?;
    let targets = discover::targets(&cfg.discovery, cfg.filter.pid)?;
    // Before the outputs' threads start, so that they run at the reader's priority.
    raise_priority(cfg.debug);
    let mut out = output::open(&cfg.output, stop)?;
    let cgroup = cfg.filter.cgroup.as_deref().map(open_cgroup).transpose()?;
    let load = Load {
        filter: &cfg.filter,
        cgroup: cgroup.as_ref().map(|fd| fd.as_fd()),
        capture: &cfg.capture,
        follow: cfg.follow,
    };
    // For the rest of the process: the follower's thread may still be examining a file
    // when the tracer returns, and the process's exit ends it.
    let storage = Box::leak(Box::new(MaybeUninit::uninit()));
    let kernel: &'static Kernel = Box::leak(Box::new(Kernel::load(storage, &load, features)?));
    say_capture_limit(kernel, cfg.capture.max_bytes);
    let registry = Arc::new(Mutex::new(Some(attach_at_start(kernel, cfg, targets)?)));
    let libraries = cfg.discovery.libraries.clone();
    let following = match (cfg.follow, cfg.hold) {
        (false, _) => Following::Off,
        (true, false) => Following::Attach,
        (true, true) => Following::Hold,
    };
    let mut follower = Follower::new(kernel, Arc::clone(&registry), libraries, following);
    follower.examine_running(cfg.filter.pid);
    if cfg.debug {
        let links = follow::lock(&registry)
            .as_ref()
            .map_or(0, Registry::link_count);
        diag::notice(&format!("{links} links attached"));
    }
    let stopped = || {
        let exited = watch.as_ref().is_some_and(procfs::Watch::exited);
        if exited {
            diag::notice(&format!(
                "process {} exited; stopping",
                cfg.filter.pid.unwrap_or_default()
            ));
        }
        exited || stop.load(Ordering::Relaxed)
    };
    capture(kernel, cfg, (follower, registry), &mut out, &stopped)
}

/// How long the exit waits for the follower to finish the file it is examining; past
/// that the links are detached anyway, and the follower attaches nothing more.
const FOLLOWER_GRACE: Duration = Duration::from_millis(200);

/// Drains the ring, with the follower on a thread of its own, until told to stop; then
/// detaches everything and sums up.
fn capture(
    kernel: &'static Kernel,
    cfg: &Config,
    (follower, registry): (Follower<'static, 'static>, SharedRegistry),
    out: &mut Outputs,
    stopped: &dyn Fn() -> bool,
) -> Result<Option<Summary>> {
    let sink = RefCell::new(Sink::new(out, cfg.output.http));
    let ring = events_ring(kernel, &sink)?;
    let unannounced = || kernel.counters().unannounced_bytes;
    let watch = Watch {
        stop: stopped,
        unannounced_bytes: &unannounced,
        interactive: cfg.output.interactive,
    };
    let follower_stop = Arc::new(AtomicBool::new(false));
    let following = spawn_follower(follower, Arc::clone(&follower_stop));
    diag::ready();
    let drained = pump::drain(&ring, &sink, &watch);
    follower_stop.store(true, Ordering::Relaxed);
    let _ = following.recv_timeout(FOLLOWER_GRACE);
    // Detach first so that nothing new arrives, then drain what is already queued.
    let detach_started = Instant::now();
    kernel.stop_probes();
    if let Some(registry) = follow::lock(&registry).take() {
        registry.detach_all();
    }
    if cfg.debug {
        diag::notice(&format!("detached in {:?}", detach_started.elapsed()));
    }
    let reported = drained?;
    let _ = ring.consume();
    drop(ring);
    wind_up(sink.into_inner(), reported, kernel)
}

/// The directory of --cgroup's cgroup, in the cgroup v2 hierarchy.
fn open_cgroup(path: &Path) -> Result<OwnedFd> {
    let hierarchy = procfs::CgroupHierarchy::open()
        .context("--cgroup: no cgroup v2 hierarchy is mounted (cgroup2 in /proc/self/mountinfo)")?;
    hierarchy
        .open_cgroup(path)
        .with_context(|| format!("--cgroup {}", diag::safe_path(path)))
}

/// How long the start waits for the follower to listen to the kernel.
const FOLLOWER_START: Duration = Duration::from_secs(1);

/// Runs the follower on a thread of its own and returns once it listens, so that a
/// program started after "ready" is held however soon it ends; the receiver hears when
/// the follower has stopped.
fn spawn_follower(follower: Follower<'static, 'static>, stop: Arc<AtomicBool>) -> Receiver<()> {
    let (done, stopped) = mpsc::channel();
    let (listens, listening) = mpsc::channel();
    std::thread::spawn(move || {
        let listens = move || {
            let _ = listens.send(());
        };
        if let Err(e) = follower.run(&stop, listens) {
            diag::warn(&format!("following the machine stopped: {e:#}"));
        }
        let _ = done.send(());
    });
    // A follower that fails to start has said why, and drops its sender.
    let _ = listening.recv_timeout(FOLLOWER_START);
    stopped
}

fn watch_process(pid: u32) -> Result<procfs::Watch> {
    procfs::check(pid)?;
    procfs::Watch::new(pid)
}

fn set_libbpf_log(debug: bool) {
    if debug {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, |_, msg| {
            eprint!("{msg}")
        })));
    } else {
        libbpf_rs::set_print(None);
    }
}

/// `--check-kernel`: every variant this kernel can take, loaded.
fn check_kernel(features: Features) -> Result<()> {
    let results = kernel::check_variants(features);
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    for r in &results {
        diag::variant(r);
    }
    if failed > 0 {
        bail!(
            "{failed} of {} program variants failed to load",
            results.len()
        );
    }
    Ok(())
}

/// On kernels without bpf_loop a call is captured up to a bound: say so, once.
fn say_capture_limit(kernel: &Kernel, asked: u64) {
    let limit = kernel.capture_limit();
    if limit != asked {
        warning!(
            "this kernel lacks bpf_loop (Linux 5.17): at most {limit} bytes of a call are \
             captured; the rest is counted as truncated"
        );
    }
}

/// Attaches to every target found at start, and the hooks; a target that fails is a
/// warning, none attached an error.
fn attach_at_start(kernel: &Kernel, cfg: &Config, targets: Vec<Target>) -> Result<Registry> {
    let scope = Scope {
        pid: cfg.filter.pid,
        handshakes: cfg.capture.handshakes,
        connections: cfg.capture.connections,
    };
    let features = kernel.features();
    let mut registry = Registry::new(scope, features.uprobe_multi, cfg.debug);
    let mut attached = 0;
    let mut last_error = None;
    for target in targets {
        let keep = target.requested || !cfg.follow;
        match registry.attach(kernel, target, None, keep) {
            Ok(any) => attached += usize::from(any),
            Err(e) => {
                warning!("{e:#}");
                last_error = Some(e);
            }
        }
    }
    if attached == 0 {
        match last_error {
            Some(e) => return Err(e.context("no TLS library could be traced")),
            None => {
                bail!("no TLS library to trace was found (name one with --extra-lib TYPE:PATH)")
            }
        }
    }
    attach_hooks(kernel, cfg, &mut registry)?;
    Ok(registry)
}

fn attach_hooks(kernel: &Kernel, cfg: &Config, registry: &mut Registry) -> Result<()> {
    let features = kernel.features();
    if cfg.capture.connections {
        registry.attach_hook(kernel, Hook::Connections, None)?;
    }
    if !features.task_storage {
        registry.attach_hook(kernel, Hook::ThreadExit, None)?;
    }
    if cfg.follow {
        registry
            .attach_hook(kernel, Hook::Exec, None)
            .context("cannot follow new programs")?;
        // The tracepoint where it attaches, else the hook on every syscall exit.
        let traced = features.mmap_tracepoint.is_some_and(|id| {
            registry
                .attach_hook(kernel, Hook::MmapTracepoint, Some(id))
                .is_ok()
        });
        if !traced {
            registry
                .attach_hook(kernel, Hook::MmapSyscallExit, None)
                .context("cannot follow new programs")?;
        }
    }
    Ok(())
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

fn events_ring<'a>(kernel: &'a Kernel, sink: &'a RefCell<Sink>) -> Result<RingBuffer<'a>> {
    let mut builder = RingBufferBuilder::new();
    builder
        .add(kernel.events(), |data| sink.borrow_mut().record(data))
        .context("cannot open the ring buffer")?;
    builder.build().context("cannot open the ring buffer")
}

/// Reports what is still held, the last undelivered bytes and the summary.
fn wind_up(mut sink: Sink, reported: pump::Reported, kernel: &Kernel) -> Result<Option<Summary>> {
    let error = sink.finish();
    let counters = kernel.counters();
    pump::report_undelivered(reported, &sink, counters.unannounced_bytes);
    let counts = sink.counts();
    // What an output holds: what the assembler handed on, less what it left out.
    let delivered = |left: Shortfall| Delivered {
        events: counts.events - left.unwritten.events,
        captured_bytes: counts.bytes - left.payload(),
        undelivered_bytes: counts.undelivered_bytes + counters.unannounced_bytes + left.payload(),
        dropped_bytes: left.payload(),
    };
    let mut stdout = delivered(Shortfall::default());
    let mut pcap_file = None;
    for (destination, left) in sink.shortfalls() {
        match destination {
            Destination::Stdout => stdout = delivered(left),
            Destination::PcapFile => pcap_file = Some(delivered(left)),
        }
    }
    let summary = Summary {
        calls: counters.calls,
        events: stdout.events,
        captured_bytes: stdout.captured_bytes,
        truncated_bytes: counts.truncated_bytes,
        undelivered_bytes: stdout.undelivered_bytes,
        unannounced_bytes: counters.unannounced_bytes,
        dropped_bytes: stdout.dropped_bytes,
        untracked_calls: counters.untracked_calls,
        malformed_records: counts.malformed,
        pcap_file,
    };
    match error {
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(None),
        Some(e) => Err(e).context("cannot write the output"),
        None => Ok(Some(summary)),
    }
}
