//! What the running kernel can do, probed rather than guessed from its version string
//! (distributions backport BPF features: RHEL 9's 5.14 has helpers that upstream 5.14
//! lacks), and what it counted for us.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Result};
use libbpf_rs::{MapCore, MapFlags};
use libbpf_sys as sys;

use crate::bpf::types::stats;
use crate::bpf::SslsniffSkel;

/// Features the BPF programs cannot do without, each with the upstream version that
/// brought it.
const HELPERS: [(sys::bpf_func_id, &str, &str); 4] = [
    (sys::BPF_FUNC_ringbuf_reserve, "BPF ring buffers", "5.8"),
    (sys::BPF_FUNC_task_storage_get, "task storage", "5.11"),
    (sys::BPF_FUNC_get_attach_cookie, "probe cookies", "5.15"),
    (sys::BPF_FUNC_loop, "bpf_loop", "5.17"),
];

/// Refuses to start, in one line naming what is missing, on a kernel that cannot run the
/// programs, instead of letting the verifier fail with a page of log.
pub fn check_features() -> Result<()> {
    for (helper, what, since) in HELPERS {
        // SAFETY: a pure query; the null options pointer is documented as allowed.
        let ok = unsafe {
            sys::libbpf_probe_bpf_helper(sys::BPF_PROG_TYPE_KPROBE, helper, std::ptr::null())
        };
        if ok <= 0 {
            bail!(
                "this kernel lacks {what} for uprobe programs (Linux {since} or later, or a \
                 distribution kernel with it backported, is needed)"
            );
        }
    }
    Ok(())
}

/// Whether multi-uprobe links (Linux 6.6+) work: one link for many functions of a file,
/// which closes fast. SSLSNIFF_NO_UPROBE_MULTI=1 forces the one-link-per-probe path of
/// older kernels, so that it stays tested.
pub fn uprobe_multi_supported() -> bool {
    if std::env::var_os("SSLSNIFF_NO_UPROBE_MULTI").is_some() {
        return false;
    }
    let Some(prog) = load_return_zero(sys::BPF_TRACE_UPROBE_MULTI) else {
        return false;
    };
    let path = CString::new("/").expect("no NUL inside");
    let offsets: [std::os::raw::c_ulong; 1] = [0];
    let mut opts = sys::bpf_link_create_opts {
        sz: std::mem::size_of::<sys::bpf_link_create_opts>() as _,
        ..Default::default()
    };
    opts.__bindgen_anon_1.uprobe_multi = sys::bpf_link_create_opts__bindgen_ty_1__bindgen_ty_3 {
        cnt: 1,
        path: path.as_ptr(),
        offsets: offsets.as_ptr(),
        ..Default::default()
    };
    // SAFETY: every pointer in opts outlives the call; a returned fd is ours to close.
    let link = unsafe {
        sys::bpf_link_create(
            std::os::fd::AsRawFd::as_raw_fd(&prog),
            0,
            sys::BPF_TRACE_UPROBE_MULTI,
            &opts,
        )
    };
    let err = io::Error::last_os_error().raw_os_error();
    if link >= 0 {
        // SAFETY: the kernel just gave us this fd.
        drop(unsafe { OwnedFd::from_raw_fd(link) });
        return true;
    }
    // "/" is a directory: a kernel that knows the link type fails on the path (EBADF);
    // one that does not rejects the attach type (EINVAL).
    err == Some(libc::EBADF)
}

/// Where tracefs is found mounted, newest place first.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The id of a syscall's own tracepoint (`sys_exit_mmap`), which attaching a program to
/// it needs, or None: SSLSNIFF_NO_SYSCALL_TRACEPOINT=1 says to do without, so that the
/// other path stays tested. The id is in tracefs; where tracefs is not mounted (Debian
/// does not mount it), it is mounted for a moment in a private mount namespace of a
/// thread of ours, and nothing outside that thread ever sees it.
pub fn syscall_tracepoint_id(event: &str) -> Option<u64> {
    if std::env::var_os("SSLSNIFF_NO_SYSCALL_TRACEPOINT").is_some() {
        return None;
    }
    let file = format!("events/syscalls/{event}/id");
    let read = move || {
        TRACEFS.iter().find_map(|dir| {
            let id = std::fs::read_to_string(Path::new(dir).join(&file)).ok()?;
            id.trim().parse().ok()
        })
    };
    read().or_else(|| {
        std::thread::spawn(move || mount_tracefs_privately().ok().and_then(|()| read()))
            .join()
            .ok()
            .flatten()
    })
}

/// Mounts tracefs in a new mount namespace of the calling thread, which must end when
/// done with it (the namespace, and the mount, go with it).
fn mount_tracefs_privately() -> nix::Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    // Private first: a mount under a shared one would propagate to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    mount(
        Some("tracefs"),
        TRACEFS[0],
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        None::<&str>,
    )
}

/// Loads `r0 = 0; exit` as a uprobe program expecting `attach_type`.
fn load_return_zero(attach_type: sys::bpf_attach_type) -> Option<OwnedFd> {
    let mut insns = [sys::bpf_insn::default(), sys::bpf_insn::default()];
    insns[0].code = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, into r0
    insns[1].code = 0x95; // BPF_JMP | BPF_EXIT
    let mut opts = sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<sys::bpf_prog_load_opts>() as _,
        expected_attach_type: attach_type,
        ..Default::default()
    };
    let license = CString::new("GPL").expect("no NUL inside");
    // SAFETY: insns, license and opts outlive the call; a returned fd is ours.
    let fd = unsafe {
        sys::bpf_prog_load(
            sys::BPF_PROG_TYPE_KPROBE,
            std::ptr::null(),
            license.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    };
    // SAFETY: the kernel just gave us this fd.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The BPF side's counters, summed over CPUs.
pub fn stats(skel: &SslsniffSkel) -> stats {
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
            total.lost_records += s.lost_records;
            total.undelivered_bytes += s.undelivered_bytes;
            total.unannounced_bytes += s.unannounced_bytes;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_what_the_programs_need() {
        check_features().unwrap();
        assert!(uprobe_multi_supported(), "kernel 6.18 has uprobe_multi");
    }

    #[test]
    fn finds_a_syscall_tracepoint_without_changing_the_mounts() {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(syscall_tracepoint_id("sys_exit_mmap").is_some());
        assert_eq!(syscall_tracepoint_id("sys_exit_no_such_call"), None);
        assert_eq!(
            std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
            mounts
        );
    }
}
