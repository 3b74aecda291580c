//! The floor: empty entry and return probes on the functions sslsniff traces, attached
//! the way sslsniff attaches on this kernel (multi-uprobe links filtered by PID). What
//! they cost, any uprobe tracer costs; sslsniff is judged on what it adds to it.

use std::mem::MaybeUninit;
use std::path::Path;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, ProgramMut, UprobeMultiOpts};
use sslsniff::{discover, libs};

// Generated code: no lint of ours applies.
#[allow(warnings, clippy::all)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}

const LIBSSL: &str = "/lib/x86_64-linux-gnu/libssl.so.3";
const FUNCS: [&str; 4] = ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"];

/// Runs `load` with the floor probes attached to process `pid`.
pub fn traced<T>(pid: u32, load: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut storage = MaybeUninit::uninit();
    let skel = open_and_load(&mut storage)?;
    let offsets = offsets()?;
    let _links = [
        attach(&skel.progs.floor_enter, pid, &offsets, false)?,
        attach(&skel.progs.floor_exit, pid, &offsets, true)?,
    ];
    load()
}

/// Runs `load` with an empty uprobe (never a uretprobe: see golang.rs) at each of
/// `offsets` in `path`, in every process that runs it.
pub fn traced_at<T>(path: &Path, offsets: &[usize], load: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut storage = MaybeUninit::uninit();
    let skel = open_and_load(&mut storage)?;
    let opts = UprobeMultiOpts {
        offsets: offsets.to_vec(),
        ..Default::default()
    };
    let _link = skel
        .progs
        .floor_enter
        .attach_uprobe_multi_with_opts(-1, path, "", opts)
        .with_context(|| format!("cannot attach the floor probes to {}", path.display()))?;
    load()
}

fn open_and_load(storage: &mut MaybeUninit<libbpf_rs::OpenObject>) -> Result<skel::FloorSkel<'_>> {
    let open = skel::FloorSkelBuilder::default()
        .open(storage)
        .context("cannot open the floor BPF object")?;
    open.load()
        .context("the kernel refused the floor BPF programs")
}

fn attach(prog: &ProgramMut, pid: u32, offsets: &[usize], retprobe: bool) -> Result<Link> {
    let opts = UprobeMultiOpts {
        offsets: offsets.to_vec(),
        retprobe,
        ..Default::default()
    };
    prog.attach_uprobe_multi_with_opts(pid as i32, LIBSSL, "", opts)
        .with_context(|| {
            format!("cannot attach the floor probes to {LIBSSL} (multi-uprobes need Linux 6.6)")
        })
}

/// The file offsets of FUNCS, found as sslsniff finds them. libbpf could resolve the
/// names itself, but libbpf 1.7 fails with ENOENT on a library that has .dynsym and no
/// .symtab, as Debian ships them (libbpf/libbpf#953).
fn offsets() -> Result<Vec<usize>> {
    let openssl = libs::by_name("openssl").context("no openssl in the support table")?;
    let path = Path::new(LIBSSL);
    let targets = discover::file_targets(&[openssl], path, path, |_| true)?
        .with_context(|| format!("{LIBSSL} changed while it was read"))?;
    FUNCS
        .iter()
        .map(|&name| {
            targets
                .iter()
                .flat_map(|t| &t.probes)
                .find(|p| p.func.name == name)
                .map(|p| p.offset as usize)
                .with_context(|| format!("{LIBSSL} does not define {name}"))
        })
        .collect()
}
