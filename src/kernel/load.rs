//! Fills the programs' read-only data, picks the programs and map types that the chosen
//! mechanisms need, and loads them. Filters are rodata so that filtered traffic costs
//! one compare, and the verifier drops the branches of mechanisms not in use.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapType, OpenObject, ProgramAttachType};

use super::features::Features;
use super::record::raw_direction;
use super::skel::types::{func_info, go_fd_path, ret_convention, rodata};
use super::skel::{OpenSslsniffSkel, SslsniffSkel, SslsniffSkelBuilder};
use super::{is_probe_program, Programs};
use crate::config::{Capture, Filter};
use crate::golang;
use crate::libs::{self, Abi, AeadArgs, Count, Func, Library, Role};

/// What the kernel side is asked to do.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    pub filter: &'a Filter,
    /// The directory of `filter.cgroup`, open (None only where nothing is attached:
    /// `--check-kernel`).
    pub cgroup: Option<BorrowedFd<'a>>,
    pub capture: &'a Capture,
    pub follow: bool,
}

/// Kernels without task storage: per-thread call state in hashes this large, each slot
/// held by a thread only while it is inside a call.
const MAX_THREADS_IN_CALLS: u32 = 1 << 14;

pub(super) fn load<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    what: &Load,
    features: &Features,
) -> Result<SslsniffSkel<'obj>> {
    let mut open = SslsniffSkelBuilder::default()
        .open(storage)
        .context("cannot open the BPF object")?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("the BPF object has no read-only data")?;
    fill_rodata(rodata, what, features)?;
    size_maps(&mut open, what.capture, features)?;
    choose_programs(&mut open, what, features);
    let skel = open
        .load()
        .context("the kernel refused the BPF programs (run with -d for libbpf's log)")?;
    if let Some(dir) = what.cgroup {
        skel.maps
            .cgroup_filter
            .update(
                &0u32.to_ne_bytes(),
                &dir.as_raw_fd().to_ne_bytes(),
                MapFlags::ANY,
            )
            .context("--cgroup: the kernel refused the cgroup")?;
    }
    Ok(skel)
}

fn fill_rodata(rodata: &mut rodata, what: &Load, features: &Features) -> Result<()> {
    rodata.targ_pid = what.filter.pid.unwrap_or(0);
    rodata.targ_uid = what.filter.uid.unwrap_or(u32::MAX);
    if let Some(comm) = &what.filter.comm {
        rodata.filter_comm = true;
        for (dst, &src) in rodata.targ_comm.iter_mut().zip(comm) {
            *dst = src as i8;
        }
    }
    rodata.max_capture = what.capture.max_bytes;
    // The BPF side's default is its largest chunk; a quarter of a ring (a power of two
    // of at least a page) is a power of two too.
    rodata.chunk_size = rodata.chunk_size.min(what.capture.ring_size / 4);
    rodata.track_conn = what.capture.connections;
    rodata.filter_cgroup = what.filter.cgroup.is_some();
    rodata.trace_handshakes = what.capture.handshakes;
    rodata.use_task_storage = features.task_storage;
    rodata.use_cookies = features.cookies;
    // Wake the reader early only when the ring is a quarter full; otherwise it drains
    // on its timer.
    rodata.wakeup_watermark = u64::from(what.capture.ring_size / 4);
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
    for (id, _, f) in libs::all_funcs() {
        if let Some(args) = f.aead {
            rodata.aead_funcs[aead_index(args)] = id;
        }
    }
    for (id, lib, f) in libs::all_funcs() {
        let slot = rodata
            .funcs
            .get_mut(id as usize)
            .context("the function table outgrew the BPF side")?;
        *slot = func_info {
            dir: raw_direction(f.role.direction()),
            ret: ret_convention_of(lib, f),
            nspr_fd: lib.nspr_fd.into(),
            ret_int: f.ret_int.into(),
            untie: (!lib.untie.is_empty()).into(),
            pad: 0,
        };
    }
    Ok(())
}

/// The AEAD function's slot in `aead_funcs`, as `enum aead_fn` orders them.
fn aead_index(args: AeadArgs) -> usize {
    match args {
        AeadArgs::Seal => 0,
        AeadArgs::SealScatter => 1,
        AeadArgs::Open => 2,
        AeadArgs::OpenGather => 3,
    }
}

/// Bytes of a call captured at most: `max_bytes` (0: no limit), or less where the
/// programs send a call in a bounded number of records.
pub(super) fn capture_limit(rodata: &rodata, max_bytes: u64, features: &Features) -> u64 {
    if features.bpf_loop {
        return max_bytes;
    }
    let bounded = u64::from(rodata.bounded_chunks) * u64::from(rodata.chunk_size);
    match max_bytes {
        0 => bounded,
        n => n.min(bounded),
    }
}

/// How the BPF side reads `f`'s return value.
fn ret_convention_of(lib: &Library, f: &Func) -> ret_convention {
    match (lib.abi, f.role) {
        (Abi::Go, Role::Handshake(_)) => ret_convention::RET_ERR_IFACE,
        (_, Role::Handshake(_)) => ret_convention::RET_RAW,
        (_, Role::Read(Count::Returned) | Role::Write(Count::Returned)) => {
            ret_convention::RET_COUNT
        }
        (_, Role::Read(Count::ThroughPointer) | Role::Write(Count::ThroughPointer)) => {
            ret_convention::RET_EX
        }
    }
}

fn size_maps(open: &mut OpenSslsniffSkel, capture: &Capture, features: &Features) -> Result<()> {
    open.maps
        .events
        .set_max_entries(capture.ring_size)
        .context("cannot size the ring buffer")?;
    if !features.task_storage {
        let maps = &mut open.maps;
        let per_thread = [
            &mut maps.calls,
            &mut maps.handshakes,
            &mut maps.aead_calls,
            &mut maps.bio_watches,
        ];
        for map in per_thread {
            map.set_type(MapType::Hash)
                .and_then(|()| map.set_map_flags(0))
                .and_then(|()| map.set_max_entries(MAX_THREADS_IN_CALLS))
                .context("cannot make the per-thread call tables")?;
        }
    }
    Ok(())
}

/// Loads the programs this run attaches, and no other: a program that is not loaded
/// costs nothing and need not pass this kernel's verifier.
fn choose_programs(open: &mut OpenSslsniffSkel, what: &Load, features: &Features) {
    let wanted = Programs::new(features);
    let mut load: Vec<String> = libs::all_funcs()
        .flat_map(|(id, lib, _)| wanted.probe_programs(lib.abi, id))
        .collect();
    let hooks = [
        ("conn_fd", what.capture.connections),
        ("tls_untie", what.capture.connections),
        ("follow_exec", what.follow),
        // The syscall-exit hook is loaded even when the tracepoint will be used: it is
        // the way back if attaching to the tracepoint fails.
        ("follow_mmap", what.follow),
        (
            "follow_mmap_tp",
            what.follow && features.mmap_tracepoint.is_some(),
        ),
        ("thread_exit", !features.task_storage),
    ];
    load.extend(
        hooks
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n.to_string()),
    );
    for mut prog in open.open_object_mut().progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        let on = load.contains(&name);
        prog.set_autoload(on);
        if on && features.uprobe_multi && is_probe_program(&name) {
            prog.set_attach_type(ProgramAttachType::TraceUprobeMulti);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_fits_the_bpf_tables() {
        // SAFETY: rodata is plain integers, bools and arrays of them; all zeroes is valid.
        let rodata: rodata = unsafe { std::mem::zeroed() };
        let n = libs::all_funcs().count();
        assert!(n <= rodata.funcs.len());
        let fixed = "tls_enter_".len();
        let skel = SslsniffSkelBuilder::default();
        let mut storage = MaybeUninit::uninit();
        let open = skel.open(&mut storage).unwrap();
        let fixed_programs = open
            .open_object()
            .progs()
            .filter(|p| {
                p.name().len() > fixed && p.name().to_string_lossy().starts_with("tls_enter_")
            })
            .count();
        assert!(
            n <= fixed_programs,
            "{n} functions, {fixed_programs} fixed programs"
        );
        assert!(golang::fd_paths().count() <= rodata.go_fd_paths.len());
    }
}
