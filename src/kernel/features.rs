//! What the running kernel can do, probed rather than guessed from its version string
//! (distributions backport BPF features: RHEL 9's 5.14 has helpers that upstream 5.14
//! lacks), and, for each feature it may lack, the fallback chosen. This is the one place
//! where that choice is made; everything else asks `Features`.
//!
//! `SSLSNIFF_WITHOUT=NAME,...` (or `all`) makes sslsniff do without features that the
//! kernel has, so that every fallback runs on the machine the tests run on.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Result};

use crate::diag::{self, Mechanism};
use libbpf_sys as sys;

/// A kernel feature that sslsniff uses where it exists and does without where not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    TaskStorage,
    Cookies,
    BpfLoop,
    UprobeMulti,
    SyscallTracepoint,
}

impl Feature {
    pub const ALL: [Feature; 5] = [
        Feature::TaskStorage,
        Feature::Cookies,
        Feature::BpfLoop,
        Feature::UprobeMulti,
        Feature::SyscallTracepoint,
    ];

    /// The name in `SSLSNIFF_WITHOUT`, `-d` and `--status json`.
    pub fn name(self) -> &'static str {
        match self {
            Feature::TaskStorage => "task-storage",
            Feature::Cookies => "cookies",
            Feature::BpfLoop => "bpf-loop",
            Feature::UprobeMulti => "uprobe-multi",
            Feature::SyscallTracepoint => "syscall-tracepoint",
        }
    }

    /// The upstream release that brought it.
    pub fn since(self) -> &'static str {
        match self {
            Feature::TaskStorage => "5.11",
            Feature::Cookies => "5.15",
            Feature::BpfLoop => "5.17",
            Feature::UprobeMulti => "6.6",
            Feature::SyscallTracepoint => "5.15",
        }
    }

    /// What sslsniff does with the feature, and without it.
    pub fn mechanisms(self) -> (&'static str, &'static str) {
        match self {
            Feature::TaskStorage => (
                "per-thread call state in task storage",
                "per-thread call state in a hash keyed by thread",
            ),
            Feature::Cookies => (
                "one program per role, the function told by the probe's cookie",
                "one program per function",
            ),
            Feature::BpfLoop => (
                "bpf_loop over a call's records",
                "a bounded loop over a call's records",
            ),
            Feature::UprobeMulti => (
                "one multi-uprobe link per file and program",
                "one perf-event link per probe",
            ),
            Feature::SyscallTracepoint => (
                "the mmap syscall's own tracepoint",
                "a BTF tracepoint on every syscall exit",
            ),
        }
    }
}

/// The mechanisms this run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub task_storage: bool,
    pub cookies: bool,
    pub bpf_loop: bool,
    pub uprobe_multi: bool,
    /// The mmap syscall tracepoint's id, when following can use it.
    pub mmap_tracepoint: Option<u64>,
}

impl Features {
    /// Probes the kernel, then drops what `SSLSNIFF_WITHOUT` names. Fails, in one line,
    /// on a kernel that cannot run sslsniff at all.
    pub fn probe() -> Result<Features> {
        require_ring_buffer()?;
        require_btf()?;
        let probed = Features {
            task_storage: has_helper(sys::BPF_FUNC_task_storage_get),
            cookies: has_helper(sys::BPF_FUNC_get_attach_cookie),
            bpf_loop: has_helper(sys::BPF_FUNC_loop),
            uprobe_multi: uprobe_multi_works(),
            mmap_tracepoint: None,
        };
        let off = forced_off()?;
        let mut features = probed.without(&off);
        // Only the tracepoint's id is costly to learn (it may mount tracefs): ask only
        // when it will be used.
        if !off.contains(&Feature::SyscallTracepoint) && has_task_pt_regs() {
            features.mmap_tracepoint = syscall_tracepoint_id("sys_exit_mmap");
        }
        Ok(features)
    }

    /// These features taken away, and what depends on them: multi-uprobe links carry
    /// cookies, and the programs made for kernels without cookies (all before 5.15)
    /// carry the bounded loop.
    pub fn without(mut self, off: &[Feature]) -> Features {
        for f in off {
            match f {
                Feature::TaskStorage => self.task_storage = false,
                Feature::Cookies => self.cookies = false,
                Feature::BpfLoop => self.bpf_loop = false,
                Feature::UprobeMulti => self.uprobe_multi = false,
                Feature::SyscallTracepoint => self.mmap_tracepoint = None,
            }
        }
        if !self.cookies {
            self.uprobe_multi = false;
            self.bpf_loop = false;
        }
        self
    }

    pub fn has(&self, f: Feature) -> bool {
        match f {
            Feature::TaskStorage => self.task_storage,
            Feature::Cookies => self.cookies,
            Feature::BpfLoop => self.bpf_loop,
            Feature::UprobeMulti => self.uprobe_multi,
            Feature::SyscallTracepoint => self.mmap_tracepoint.is_some(),
        }
    }

    /// Feature by feature, the mechanism used: for `-d` and `--status json`.
    pub fn mechanisms(&self) -> Vec<Mechanism> {
        Feature::ALL
            .iter()
            .map(|&f| {
                let (with, without) = f.mechanisms();
                Mechanism {
                    feature: f.name(),
                    native: self.has(f),
                    uses: if self.has(f) { with } else { without },
                }
            })
            .collect()
    }
}

/// The features `SSLSNIFF_WITHOUT` names (comma-separated, or `all`).
fn forced_off() -> Result<Vec<Feature>> {
    let Some(list) = std::env::var_os("SSLSNIFF_WITHOUT") else {
        return Ok(Vec::new());
    };
    let list = list.to_string_lossy();
    let mut off = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            off.extend(Feature::ALL);
            continue;
        }
        match Feature::ALL.iter().find(|f| f.name() == name) {
            Some(&f) => off.push(f),
            None => bail!(
                "SSLSNIFF_WITHOUT: unknown feature '{}' (known: all, {})",
                diag::safe(name.as_bytes()),
                Feature::ALL.map(Feature::name).join(", ")
            ),
        }
    }
    Ok(off)
}

/// The ring buffer (5.8) carries every record: without it nothing works.
fn require_ring_buffer() -> Result<()> {
    if has_helper(sys::BPF_FUNC_ringbuf_reserve) {
        return Ok(());
    }
    bail!(
        "this kernel lacks BPF ring buffers for uprobe programs (Linux 5.8 or later, or a \
         distribution kernel with them backported, is needed)"
    )
}

/// The programs read kernel structures through CO-RE, which needs the kernel's BTF.
fn require_btf() -> Result<()> {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Ok(());
    }
    bail!(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux): it needs CONFIG_DEBUG_INFO_BTF, \
         which Debian, Ubuntu, Fedora and RHEL kernels have"
    )
}

fn has_helper(helper: sys::bpf_func_id) -> bool {
    has_helper_for(sys::BPF_PROG_TYPE_KPROBE, helper)
}

fn has_helper_for(prog_type: sys::bpf_prog_type, helper: sys::bpf_func_id) -> bool {
    // SAFETY: a pure query; the null options pointer is documented as allowed.
    unsafe { sys::libbpf_probe_bpf_helper(prog_type, helper, std::ptr::null()) > 0 }
}

/// The mmap tracepoint's program reads the syscall's arguments through the task's
/// registers (5.15 helpers).
fn has_task_pt_regs() -> bool {
    [
        sys::BPF_FUNC_task_pt_regs,
        sys::BPF_FUNC_get_current_task_btf,
    ]
    .iter()
    .all(|&h| has_helper_for(sys::BPF_PROG_TYPE_TRACEPOINT, h))
}

/// Whether multi-uprobe links (Linux 6.6+) work: one link for many functions of a file,
/// which closes fast. Tried for real: a kernel may know the type and refuse it.
fn uprobe_multi_works() -> bool {
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
    let link =
        unsafe { sys::bpf_link_create(prog.as_raw_fd(), 0, sys::BPF_TRACE_UPROBE_MULTI, &opts) };
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

/// Where tracefs is found mounted, newest place first.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The id of a syscall's own tracepoint (`sys_exit_mmap`), which attaching a program to
/// it needs, or None. The id is in tracefs; where tracefs is not mounted (Debian does not
/// mount it), it is mounted for a moment in a private mount namespace of a thread of
/// ours, and nothing outside that thread ever sees it.
fn syscall_tracepoint_id(event: &str) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_every_feature() {
        if std::env::var_os("SSLSNIFF_WITHOUT").is_some() {
            return;
        }
        let f = Features::probe().unwrap();
        assert!(
            Feature::ALL.iter().all(|&x| f.has(x)),
            "kernel 6.18 has all: {f:?}"
        );
    }

    #[test]
    fn features_taken_away_take_their_dependents() {
        let all = Features {
            task_storage: true,
            cookies: true,
            bpf_loop: true,
            uprobe_multi: true,
            mmap_tracepoint: Some(1),
        };
        assert_eq!(all.without(&[]), all);
        let no_cookies = all.without(&[Feature::Cookies]);
        assert!(!no_cookies.uprobe_multi && !no_cookies.bpf_loop && no_cookies.task_storage);
        let none = all.without(&Feature::ALL);
        assert!(Feature::ALL.iter().all(|&x| !none.has(x)));
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
