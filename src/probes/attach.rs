//! Puts the entry and return programs on the functions of one file: one multi-uprobe
//! link per program where the kernel has them, one perf-event link per probe where not;
//! and the hooks that are not on files (syscalls, exec).

use std::os::fd::FromRawFd;

use anyhow::{Context, Result};
use libbpf_rs::{ErrorKind, Link, ProgramMut, UprobeMultiOpts, UprobeOpts};

use super::registry::Origin;
use crate::clock;
use crate::diag;
use crate::discover::{Probe, Target};
use crate::kernel::{Hook, Kernel, Site};
use crate::libs::{Abi, Direction, Role};
use crate::procfs;

/// Which probes to place, and on whose behalf.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// Only this process (-p), else every process.
    pub pid: Option<u32>,
    pub handshakes: bool,
    /// Connection tracking: the functions that untie an object are probed, and so are
    /// the handshakes of objects that may be tied, for the socket their I/O names
    /// (reported only with `handshakes`).
    pub connections: bool,
}

/// Where one program goes in a file: offsets with their cookies, as entry or return.
struct Sites<'k> {
    prog: ProgramMut<'k>,
    retprobe: bool,
    offsets: Vec<usize>,
    cookies: Vec<u64>,
    names: Vec<&'static str>,
}

/// The probes of `target` that the scope wants.
fn wanted(scope: Scope, target: &Target) -> Vec<&Probe> {
    // A handshake's I/O says which socket an object fed through memory uses.
    let ties = !untie(scope, target).is_empty();
    target
        .probes
        .iter()
        .filter(|p| scope.handshakes || ties || !matches!(p.func.role, Role::Handshake(_)))
        .collect()
}

/// The untie functions of `target` that the scope wants: with connection tracking.
fn untie(scope: Scope, target: &Target) -> &[(&'static str, u64)] {
    if scope.connections {
        &target.untie
    } else {
        &[]
    }
}

/// Attaches every probe of `target`; the links, none when the target has no function
/// the scope wants.
pub fn attach(kernel: &Kernel, scope: Scope, target: &Target) -> Result<Vec<Link>> {
    let probes = wanted(scope, target);
    if probes.is_empty() {
        return Ok(Vec::new());
    }
    let pid = scope.pid.map_or(-1, |p| p as i32);
    let untie = untie(scope, target);
    // A file of a library whose objects are tied, but without its free (found by its
    // code): kernels without cookies cannot tell its calls from the library's other
    // files', so from before its probes exist no call may learn a tie.
    if scope.connections && !target.lib.untie.is_empty() && untie.is_empty() {
        kernel.refuse_ties_without_cookies();
    }
    let sites = sites(kernel, target, &probes, untie)?;
    if target.lib.abi == Abi::Go {
        kernel.set_go_layout(target.file_id(), target.go_layout);
    }
    if kernel.features().uprobe_multi {
        attach_multi(&sites, pid, target)
    } else {
        attach_each(&sites, pid, target)
    }
}

/// Says that `target` is traced: where, as which library, which functions, and what
/// revealed it (with -d, how long after).
pub fn announce(target: &Target, scope: Scope, origin: Option<&Origin>, debug: bool) {
    diag::tracing(&diag::Tracing {
        path: match origin {
            Some(o) => o.display.to_string(),
            None => diag::safe_path(&target.path),
        },
        library: target.lib.name,
        functions: wanted(scope, target).iter().map(|p| p.func.name).collect(),
        pid: origin.map(|o| o.pid),
        comm: origin
            .and_then(|o| procfs::comm(o.pid))
            .map(|c| diag::safe(&c)),
        // Files found at start have no revealing moment (ts_ns 0).
        latency_us: origin
            .filter(|o| debug && o.ts_ns > 0)
            .map(|o| clock::monotonic_ns().saturating_sub(o.ts_ns) / 1000),
        examined_us: origin
            .filter(|o| debug && o.ts_ns > 0)
            .map(|o| o.examined_ns.saturating_sub(o.ts_ns) / 1000),
        found_by: target.found_by.clone(),
        held: origin.is_some_and(|o| o.held),
    });
}

/// The probes of a target, grouped by program. C functions get an entry probe and a
/// return probe; Go functions an entry probe and a probe on each return instruction
/// (a uretprobe crashes Go).
fn sites<'k>(
    kernel: &'k Kernel,
    target: &Target,
    probes: &[&Probe],
    untie: &[(&'static str, u64)],
) -> Result<Vec<Sites<'k>>> {
    // The untie probes first: an object freed before them would leave a tie behind.
    let mut groups: Vec<Sites> = Vec::new();
    if !untie.is_empty() {
        groups.push(Sites {
            prog: kernel.untie_program()?,
            retprobe: false,
            offsets: untie.iter().map(|&(_, o)| o as usize).collect(),
            cookies: untie.iter().map(|_| 0).collect(),
            names: untie.iter().map(|&(n, _)| n).collect(),
        });
    }
    let high = match target.lib.abi {
        Abi::Go => target.go_layout,
        _ => u32::from(!untie.is_empty()),
    };
    for p in probes {
        // Go: a uprobe on every return instruction. A seal's plaintext is its input:
        // it has no return probe.
        let returns: Vec<u64> = match target.lib.abi {
            Abi::C => vec![p.offset],
            Abi::Go => p.returns.clone(),
            Abi::Aead if p.func.role.direction() == Direction::Write => Vec::new(),
            Abi::Aead => vec![p.offset],
        };
        let at = [(Site::Entry, vec![p.offset]), (Site::Return, returns)];
        for (site, offsets) in at.into_iter().filter(|(_, o)| !o.is_empty()) {
            let program = kernel.probe_program(target.lib.abi, p.id, site, high)?;
            let retprobe = site == Site::Return && target.lib.abi != Abi::Go;
            let group = match groups
                .iter_mut()
                .position(|g| g.prog.name() == program.prog.name())
            {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(Sites {
                        prog: program.prog,
                        retprobe,
                        offsets: Vec::new(),
                        cookies: Vec::new(),
                        names: Vec::new(),
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            group.cookies.extend(offsets.iter().map(|_| program.cookie));
            group.names.extend(offsets.iter().map(|_| p.func.name));
            group.offsets.extend(offsets.iter().map(|&o| o as usize));
        }
    }
    Ok(groups)
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

/// Attaches a hook that is not on a file. The mmap tracepoint needs its id.
pub fn attach_hook(kernel: &Kernel, hook: Hook, tracepoint_id: Option<u64>) -> Result<Link> {
    let prog = kernel.hook(hook)?;
    let link = match tracepoint_id {
        Some(id) => attach_tracepoint(&prog, id),
        None => prog.attach().map_err(anyhow::Error::new),
    };
    link.with_context(|| format!("cannot attach the {hook:?} hook"))
}

/// Attaches `prog` to the tracepoint whose kernel id is `id`. A tracepoint runs its
/// programs on every CPU, so one perf event (CPU 0, every process) serves the machine.
fn attach_tracepoint(prog: &ProgramMut, id: u64) -> Result<Link> {
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
