//! The kernel side, and the only code that sees the skeleton: which mechanisms the
//! kernel offers (`features`), loading the programs for them (`load`), the maps user
//! space writes (files seen, Go layouts) and reads (counters), and the decoder of the
//! records the programs send (`record`).

pub mod features;
mod load;
pub mod record;
mod skel;

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use libbpf_rs::skel::Skel;
use libbpf_rs::{MapCore, MapFlags, MapMut, OpenObject, ProgramMut};

pub use features::{Feature, Features};
pub use load::Load;
use skel::types::{file_id, stats};
use skel::SslsniffSkel;

use crate::diag::VariantCheck;
use crate::libs::{self, Abi, AeadArgs, Direction, FuncId};
use crate::procfs::FileId;

/// Where a probe sits in a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    Entry,
    Return,
}

/// The hooks that are not probes on files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Every syscall's entry: the socket under a call.
    Connections,
    /// Every exec: programs that start.
    Exec,
    /// The mmap syscall's exit: executable mappings (its own tracepoint).
    MmapTracepoint,
    /// Every syscall's exit, for mmap's (where the tracepoint cannot be had).
    MmapSyscallExit,
    /// Every thread's exit: frees per-thread call slots (kernels without task storage).
    ThreadExit,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::Connections => "conn_fd",
            Hook::Exec => "follow_exec",
            Hook::MmapTracepoint => "follow_mmap_tp",
            Hook::MmapSyscallExit => "follow_mmap",
            Hook::ThreadExit => "thread_exit",
        }
    }
}

/// The program that serves a probe, and the probe's cookie.
pub struct ProbeProgram<'a> {
    pub prog: ProgramMut<'a>,
    pub cookie: u64,
}

/// Which programs serve probes under the chosen mechanisms: one per role and site, told
/// the function by the cookie; or, without cookies, one per function.
#[derive(Debug, Clone, Copy)]
struct Programs {
    cookies: bool,
    bpf_loop: bool,
}

impl Programs {
    fn new(f: &Features) -> Programs {
        Programs {
            cookies: f.cookies,
            bpf_loop: f.bpf_loop,
        }
    }

    /// The program of function `id` at `site`; None where the function has no probe
    /// there (a seal's return: its plaintext is its input).
    fn name(&self, abi: Abi, id: FuncId, site: Site) -> Option<String> {
        let func = libs::by_id(id).map(|(_, f)| f);
        let prefix = match abi {
            Abi::C => "tls",
            Abi::Go => "go",
            Abi::Aead => return aead_program(func?.aead?, site).map(str::to_string),
        };
        let handshake = func.is_some_and(|f| f.role.direction() == Direction::Handshake);
        Some(match (site, self.cookies, self.bpf_loop) {
            (Site::Entry, true, _) => format!("{prefix}_enter"),
            (Site::Entry, false, _) => format!("{prefix}_enter_{id}"),
            // C handshakes have a slot of their own, and move no data.
            (Site::Return, _, _) if abi == Abi::C && handshake => "tls_exit_handshake".into(),
            (Site::Return, _, true) => format!("{prefix}_exit"),
            (Site::Return, _, false) => format!("{prefix}_exit_bounded"),
        })
    }

    fn probe_programs(&self, abi: Abi, id: FuncId) -> Vec<String> {
        [Site::Entry, Site::Return]
            .into_iter()
            .filter_map(|site| self.name(abi, id, site))
            .collect()
    }
}

/// aws-lc's AEAD functions each read their own argument list: a program each, and one
/// return program for both opens. They need no cookie to tell the function.
fn aead_program(args: AeadArgs, site: Site) -> Option<&'static str> {
    Some(match (args, site) {
        (AeadArgs::Seal, Site::Entry) => "aead_seal",
        (AeadArgs::SealScatter, Site::Entry) => "aead_seal_scatter",
        (AeadArgs::Open, Site::Entry) => "aead_open",
        (AeadArgs::OpenGather, Site::Entry) => "aead_open_gather",
        (AeadArgs::Open | AeadArgs::OpenGather, Site::Return) => "aead_open_exit",
        (AeadArgs::Seal | AeadArgs::SealScatter, Site::Return) => return None,
    })
}

/// Probe programs (not hooks): these are attached to files, as uprobes.
fn is_probe_program(name: &str) -> bool {
    ["tls_", "go_", "aead_"].iter().any(|p| name.starts_with(p))
}

/// What the kernel side counted, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Successful calls that passed the filters.
    pub calls: u64,
    /// Captured bytes that could not be sent.
    pub undelivered_bytes: u64,
    /// Of those, bytes of calls of which user space never heard.
    pub unannounced_bytes: u64,
    /// Calls not traced: the per-thread table (kernels without task storage) was full.
    pub untracked_calls: u64,
    /// Files found but not reported: the ring of files found was full.
    pub unreported_files: u64,
}

/// The loaded programs and maps.
pub struct Kernel<'obj> {
    skel: SslsniffSkel<'obj>,
    features: Features,
    programs: Programs,
    /// The programs' own off switch (in .bss).
    stopped: Option<&'obj AtomicBool>,
    /// Kernels without cookies: no call may learn a tie any more (in .bss).
    ties_unsafe: Option<&'obj AtomicBool>,
    /// Bytes of a call captured at most, after the kernel's own limit.
    capture_limit: u64,
}

impl<'obj> Kernel<'obj> {
    /// Loads the programs `what` needs with the mechanisms of `features`.
    pub fn load(
        storage: &'obj mut MaybeUninit<OpenObject>,
        what: &Load,
        features: Features,
    ) -> Result<Kernel<'obj>> {
        let mut skel = load::load(storage, what, &features)?;
        let rodata = skel
            .maps
            .rodata_data
            .as_ref()
            .context("no read-only data")?;
        let capture_limit = load::capture_limit(rodata, what.capture.max_bytes, &features);
        let bss = skel.maps.bss_data.take();
        let (stopped, ties_unsafe) = bss
            .map(|bss| {
                // SAFETY: the .bss map is mapped for the object's life ('obj); a bool and an
                // AtomicBool have the same size and alignment; user space writes each only
                // through these references, and the kernel only reads them.
                unsafe {
                    (
                        AtomicBool::from_ptr(&mut bss.stopped),
                        AtomicBool::from_ptr(&mut bss.ties_unsafe),
                    )
                }
            })
            .unzip();
        Ok(Kernel {
            skel,
            programs: Programs::new(&features),
            features,
            stopped,
            ties_unsafe,
            capture_limit,
        })
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Bytes of a call captured at most (0: no limit): --max-buffer-size, or less on a
    /// kernel whose programs send a call in a bounded number of records.
    pub fn capture_limit(&self) -> u64 {
        self.capture_limit
    }

    /// The program for the probe of function `id` at `site`, and the probe's cookie: the
    /// function's id, with `high` in the upper half of an entry's: for Go the program's
    /// struct layout, for C 1 when the file's untie functions are probed too.
    pub fn probe_program(
        &self,
        abi: Abi,
        id: FuncId,
        site: Site,
        high: u32,
    ) -> Result<ProbeProgram<'_>> {
        let name = self
            .programs
            .name(abi, id, site)
            .with_context(|| format!("function {id} has no probe at its {site:?}"))?;
        let prog = self.program(&name)?;
        let cookie = match (self.programs.cookies, abi, site) {
            (false, _, _) => 0,
            (true, Abi::Go | Abi::C, Site::Entry) => u64::from(id) | u64::from(high) << 32,
            (true, _, _) => u64::from(id),
        };
        Ok(ProbeProgram { prog, cookie })
    }

    /// The program of the probes that end an object's tie (no cookie: the object is
    /// the first argument of every one of them).
    pub fn untie_program(&self) -> Result<ProgramMut<'_>> {
        self.program("tls_untie")
    }

    /// Kernels without cookies: from now on no call learns a tie (a C file whose free
    /// is not probed is about to be attached, and its calls cannot be told apart).
    pub fn refuse_ties_without_cookies(&self) {
        if let (false, Some(unsafe_now)) = (self.features.cookies, self.ties_unsafe) {
            unsafe_now.store(true, Ordering::Relaxed);
        }
    }

    pub fn hook(&self, hook: Hook) -> Result<ProgramMut<'_>> {
        self.program(hook.program())
    }

    fn program(&self, name: &str) -> Result<ProgramMut<'_>> {
        self.skel
            .object()
            .progs_mut()
            .find(|p| p.name() == name)
            .with_context(|| format!("the BPF object has no program {name}"))
    }

    /// The ring of call records.
    pub fn events(&self) -> &MapMut<'obj> {
        &self.skel.maps.events
    }

    /// The ring of files found.
    pub fn found(&self) -> &MapMut<'obj> {
        &self.skel.maps.found
    }

    /// Tells the kernel not to report the file again. A full table only means more
    /// reports; never a reason to stop.
    pub fn mark_seen(&self, file: FileId) {
        let _ = self
            .skel
            .maps
            .seen_files
            .update(&key(file), &[1], MapFlags::ANY);
    }

    /// The next exec or mapping of the file is reported again.
    pub fn forget_seen(&self, file: FileId) {
        let _ = self.skel.maps.seen_files.delete(&key(file));
    }

    /// Kernels without cookies: the struct layout of the Go program in `exe`.
    pub fn set_go_layout(&self, exe: FileId, layout: u32) {
        if !self.features.cookies && layout > 0 {
            let _ =
                self.skel
                    .maps
                    .go_layouts
                    .update(&key(exe), &layout.to_ne_bytes(), MapFlags::ANY);
        }
    }

    /// Tells the programs to return at once: their probes may outlive us a while.
    pub fn stop_probes(&self) {
        if let Some(stopped) = self.stopped {
            stopped.store(true, Ordering::Relaxed);
        }
    }

    pub fn counters(&self) -> Counters {
        let mut total = Counters::default();
        let Ok(Some(per_cpu)) = self
            .skel
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
                total.undelivered_bytes += s.undelivered_bytes;
                total.unannounced_bytes += s.unannounced_bytes;
                total.untracked_calls += s.untracked_calls;
                total.unreported_files += s.unreported_files;
            }
        }
        total
    }
}

/// Loads the programs of every set of mechanisms this kernel can run (its own, each
/// fallback alone, every fallback at once), each with every program a run may use: what
/// the verifier accepts here, variant by variant.
pub fn check_variants(native: Features) -> Vec<VariantCheck> {
    let mut sets = vec![("native".to_string(), native)];
    for f in Feature::ALL.into_iter().filter(|&f| native.has(f)) {
        sets.push((format!("without {}", f.name()), native.without(&[f])));
    }
    sets.push(("without all".to_string(), native.without(&Feature::ALL)));
    let mut checked: Vec<Features> = Vec::new();
    let mut results = Vec::new();
    for (name, features) in sets {
        if checked.contains(&features) {
            continue;
        }
        checked.push(features);
        let started = std::time::Instant::now();
        let error = load_everything(features).err().map(|e| format!("{e:#}"));
        results.push(VariantCheck {
            name,
            error,
            millis: started.elapsed().as_millis() as u64,
        });
    }
    results
}

/// Loads, and drops, every program a run with `features` may use.
fn load_everything(features: Features) -> Result<()> {
    let capture = crate::config::Capture {
        max_bytes: 1 << 20,
        ring_size: 1 << 16,
        handshakes: true,
        connections: true,
    };
    // The cgroup filter's branch is checked too; no cgroup is needed to load it.
    let filter = crate::config::Filter {
        cgroup: Some("/".into()),
        ..Default::default()
    };
    let what = Load {
        filter: &filter,
        cgroup: None,
        capture: &capture,
        follow: true,
    };
    let mut storage = MaybeUninit::uninit();
    Kernel::load(&mut storage, &what, features).map(drop)
}

fn key(file: FileId) -> Vec<u8> {
    let key = file_id {
        dev: file.dev,
        ino: file.ino,
    };
    // SAFETY: file_id is two u64s with no padding.
    unsafe { plain::as_bytes(&key) }.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_chosen_by_mechanism() {
        let all = Features {
            task_storage: true,
            cookies: true,
            bpf_loop: true,
            uprobe_multi: true,
            mmap_tracepoint: None,
        };
        // Function 1 is SSL_write.
        let name = |f: Features, abi, site| Programs::new(&f).name(abi, 1, site).unwrap();
        assert_eq!(name(all, Abi::C, Site::Entry), "tls_enter");
        assert_eq!(name(all, Abi::Go, Site::Return), "go_exit");
        let no_loop = all.without(&[Feature::BpfLoop]);
        assert_eq!(name(no_loop, Abi::C, Site::Entry), "tls_enter");
        assert_eq!(name(no_loop, Abi::C, Site::Return), "tls_exit_bounded");
        let no_cookies = all.without(&[Feature::Cookies]);
        assert_eq!(name(no_cookies, Abi::Go, Site::Entry), "go_enter_1");
        assert_eq!(name(no_cookies, Abi::C, Site::Return), "tls_exit_bounded");
        let handshake = libs::all_funcs()
            .find(|(_, _, f)| f.name == "SSL_do_handshake")
            .unwrap()
            .0;
        let program = Programs::new(&no_cookies).name(Abi::C, handshake, Site::Return);
        assert_eq!(program.as_deref(), Some("tls_exit_handshake"));
    }
}
