//! Puts the entry and return programs on every function of every target, and takes
//! them off again. Links live in one owner for the life of the tracer: a dropped link
//! detaches.

use std::os::fd::FromRawFd;

use anyhow::{bail, Result};
use libbpf_rs::{ErrorKind, Link, ProgramMut, UprobeMultiOpts, UprobeOpts};

use crate::diag::{self, warning};
use crate::discover::{Probe, Target};
use crate::libs::{Abi, AeadArgs, Role};

/// How to attach: one multi-uprobe link per file and program where the kernel has them.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// -1: every process.
    pub pid: i32,
    pub handshake: bool,
    pub multi: bool,
    /// Announce how long after its discovery a file was attached.
    pub debug: bool,
    /// The id of the mmap syscall's tracepoint, when following can use it.
    pub mmap_tracepoint: Option<u64>,
}

/// The programs probes are made of: C functions get an entry probe and a return probe;
/// Go functions an entry probe and a probe on each return instruction.
pub struct Programs<'a> {
    pub enter: &'a ProgramMut<'a>,
    pub exit: &'a ProgramMut<'a>,
    pub go_enter: &'a ProgramMut<'a>,
    pub go_exit: &'a ProgramMut<'a>,
    pub aead: AeadPrograms<'a>,
}

/// aws-lc's AEAD functions: an entry program for each argument list, one return program
/// for both opens.
pub struct AeadPrograms<'a> {
    pub seal: &'a ProgramMut<'a>,
    pub seal_scatter: &'a ProgramMut<'a>,
    pub open: &'a ProgramMut<'a>,
    pub open_gather: &'a ProgramMut<'a>,
    pub open_exit: &'a ProgramMut<'a>,
}

/// Attaches to every target, returning each with its links; a target that fails is a
/// warning, none attached an error.
pub fn attach_all(
    progs: &Programs,
    plan: Plan,
    targets: Vec<Target>,
) -> Result<Vec<(Target, Vec<Link>)>> {
    let mut attached = Vec::new();
    let mut last_error = None;
    for target in targets {
        match attach_target(progs, plan, &target, None) {
            Ok(links) if !links.is_empty() => attached.push((target, links)),
            Ok(_) => {}
            Err(e) => {
                warning!("{e:#}");
                last_error = Some(e);
            }
        }
    }
    if attached.is_empty() {
        match last_error {
            Some(e) => return Err(e.context("no TLS library could be traced")),
            None => {
                bail!("no TLS library to trace was found (name one with --extra-lib TYPE:PATH)")
            }
        }
    }
    Ok(attached)
}

/// What revealed a target found while running: the process, and when.
pub struct Origin<'a> {
    pub pid: u32,
    pub ts_ns: u64,
    /// The file's name for people (the target's path goes through /proc).
    pub display: &'a str,
}

/// Attaches to one target and announces it.
pub fn attach_target(
    progs: &Programs,
    plan: Plan,
    target: &Target,
    origin: Option<&Origin>,
) -> Result<Vec<Link>> {
    let probes: Vec<&Probe> = target
        .probes
        .iter()
        .filter(|p| plan.handshake || !matches!(p.func.role, Role::Handshake(_)))
        .collect();
    if probes.is_empty() {
        return Ok(Vec::new());
    }
    let sites = sites(progs, target, &probes);
    let links = if plan.multi {
        attach_multi(&sites, plan.pid, target)?
    } else {
        attach_each(&sites, plan.pid, target)?
    };
    let comm = |pid| std::fs::read(format!("/proc/{pid}/comm")).ok();
    diag::tracing(&diag::Tracing {
        path: match origin {
            Some(o) => o.display.to_string(),
            None => diag::safe_path(&target.path),
        },
        library: target.lib.name,
        functions: probes.iter().map(|p| p.func.name).collect(),
        pid: origin.map(|o| o.pid),
        comm: origin
            .and_then(|o| comm(o.pid))
            .map(|c| diag::safe(c.strip_suffix(b"\n").unwrap_or(&c))),
        // Files found at start have no revealing moment (ts_ns 0).
        latency_us: origin
            .filter(|o| plan.debug && o.ts_ns > 0)
            .map(|o| crate::pump::monotonic_ns().saturating_sub(o.ts_ns) / 1000),
        found_by: target.found_by.clone(),
    });
    Ok(links)
}

/// Where one program goes in a file: offsets with their cookies, as entry or return.
struct Sites<'a> {
    prog: &'a ProgramMut<'a>,
    retprobe: bool,
    offsets: Vec<usize>,
    cookies: Vec<u64>,
    names: Vec<&'static str>,
}

/// The probes of a target, grouped by program. A cookie is the function's table id; a
/// Go entry's also carries the program's struct layout in its upper half.
fn sites<'a>(progs: &'a Programs, target: &Target, probes: &[&Probe]) -> Vec<Sites<'a>> {
    let group = |prog, retprobe| Sites {
        prog,
        retprobe,
        offsets: Vec::new(),
        cookies: Vec::new(),
        names: Vec::new(),
    };
    let (mut entries, mut returns) = match target.lib.abi {
        Abi::C => (group(progs.enter, false), group(progs.exit, true)),
        Abi::Go => (group(progs.go_enter, false), group(progs.go_exit, false)),
        Abi::Aead => return aead_sites(&progs.aead, probes),
    };
    for p in probes {
        let id = u64::from(p.id);
        entries.offsets.push(p.offset as usize);
        entries.cookies.push(id | u64::from(target.go_layout) << 32);
        entries.names.push(p.func.name);
        let rets: Vec<usize> = match target.lib.abi {
            Abi::Go => p.returns.iter().map(|&r| r as usize).collect(),
            _ => vec![p.offset as usize],
        };
        returns.cookies.extend(rets.iter().map(|_| id));
        returns.names.extend(rets.iter().map(|_| p.func.name));
        returns.offsets.extend(rets);
    }
    vec![entries, returns]
}

/// aws-lc's AEAD functions, grouped by program: seals at entry only (the plaintext is
/// their input), opens at entry and return (it is their output).
fn aead_sites<'a>(progs: &AeadPrograms<'a>, probes: &[&Probe]) -> Vec<Sites<'a>> {
    let mut sites: Vec<Sites<'a>> = Vec::new();
    for p in probes {
        let (enter, exit) = match p.func.aead {
            Some(AeadArgs::Seal) => (progs.seal, None),
            Some(AeadArgs::SealScatter) => (progs.seal_scatter, None),
            Some(AeadArgs::Open) => (progs.open, Some(progs.open_exit)),
            Some(AeadArgs::OpenGather) => (progs.open_gather, Some(progs.open_exit)),
            None => continue,
        };
        for (prog, retprobe) in [(Some(enter), false), (exit, true)] {
            let Some(prog) = prog else { continue };
            let at = sites
                .iter()
                .position(|s| std::ptr::eq(s.prog, prog) && s.retprobe == retprobe)
                .unwrap_or_else(|| {
                    sites.push(Sites {
                        prog,
                        retprobe,
                        offsets: Vec::new(),
                        cookies: Vec::new(),
                        names: Vec::new(),
                    });
                    sites.len() - 1
                });
            sites[at].offsets.push(p.offset as usize);
            sites[at].cookies.push(u64::from(p.id));
            sites[at].names.push(p.func.name);
        }
    }
    sites
}

/// One link per program and file: detaching a few multi-links is fast, where one
/// perf-event link per probe makes exit slow.
fn attach_multi(sites: &[Sites], pid: i32, target: &Target) -> Result<Vec<Link>> {
    sites
        .iter()
        .map(|s| {
            let opts = UprobeMultiOpts {
                offsets: s.offsets.clone(),
                cookies: s.cookies.clone(),
                retprobe: s.retprobe,
                ..Default::default()
            };
            s.prog
                .attach_uprobe_multi_with_opts(pid, target.attach_path(), "", opts)
                .map_err(|e| attach_error(e, target, &s.names.join(", ")))
        })
        .collect()
}

fn attach_each(sites: &[Sites], pid: i32, target: &Target) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    for s in sites {
        for ((&offset, &cookie), name) in s.offsets.iter().zip(&s.cookies).zip(&s.names) {
            let opts = UprobeOpts {
                cookie,
                retprobe: s.retprobe,
                ..Default::default()
            };
            let link = s
                .prog
                .attach_uprobe_with_opts(pid, target.attach_path(), offset, opts)
                .map_err(|e| attach_error(e, target, name))?;
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
        diag::safe_path(&target.path)
    ))
}

/// How many threads close links at once: enough that the grace periods of hundreds of
/// links overlap, few enough to stay cheap.
const DETACH_THREADS: usize = 256;

/// Closes every link. Multi-uprobe links close side by side, and their waits for RCU
/// grace periods overlap. Perf-event links (kernels before 6.6) do not: the kernel
/// serialises their release, about 100 ms each here, so 200 library copies took minutes.
/// For those a child process takes over the last reference of each link and releases
/// them after we are gone; the caller has already told the programs to stop, so until
/// then a probe costs the traced program only its trap.
pub fn detach(links: Vec<Link>, multi: bool) {
    if !multi && links.len() > 1 && hand_off() {
        // libbpf's destroy would disable each perf event first, which waits as long as
        // the release; our descriptors close with the process, now that the child
        // holds the last reference of each.
        std::mem::forget(links);
        return;
    }
    let threads = DETACH_THREADS.min(links.len()).max(1);
    let mut shares: Vec<Vec<Link>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, link) in links.into_iter().enumerate() {
        shares[i % threads].push(link);
    }
    std::thread::scope(|scope| {
        for share in shares {
            scope.spawn(move || drop(share));
        }
    });
}

/// Forks a child that releases the links once we are gone; says whether it did.
/// Failing to fork only means closing them here, slowly.
fn hand_off() -> bool {
    // SAFETY: getpid takes nothing and cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child of a threaded process may call only async-signal-safe functions:
    // it makes raw close_range/getppid/nanosleep/_exit system calls and touches no
    // allocator, lock or Rust object.
    unsafe {
        match libc::fork() {
            0 => {}
            -1 => return false,
            _ => return true,
        }
        // stdin, stdout and stderr at once: whoever reads our output sees its end when
        // we exit, not when the last probe is released.
        libc::syscall(libc::SYS_close_range, 0u32, 2u32, 0u32);
        // The last reference releases a probe, and whoever holds it waits: wait until
        // the parent has exited (its references dropped), then release everything it
        // held. libbpf-rs does not say which descriptors belong to a link (a bpf_link
        // and its perf event), so all of them go.
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        while libc::getppid() == parent {
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::_exit(0);
    }
}

/// Attaches `prog` to the tracepoint whose kernel id is `id`. A tracepoint runs its
/// programs on every CPU, so one perf event (CPU 0, every process) serves the machine.
pub fn attach_tracepoint(prog: &ProgramMut, id: u64) -> Result<Link> {
    let mut attr = libbpf_sys::perf_event_attr {
        type_: libbpf_sys::PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config: id,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_period = 1;
    // SAFETY: attr outlives the call; a returned fd is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr,
            -1,
            0,
            -1,
            libbpf_sys::PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // On success the link owns the event and closes it when detached.
    let link = prog.attach_perf_event(fd as i32).inspect_err(|_| {
        // SAFETY: the fd is ours and nothing else holds it.
        drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) });
    })?;
    Ok(link)
}
