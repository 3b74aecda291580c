//! Following, inside the running tracer: files reported by the kernel's `found` ring are
//! examined (follow.rs), attached and announced; the kernel's seen set is kept in step;
//! files that no process maps any more are released.

use std::time::Instant;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use crate::attach::{self, AeadPrograms, Origin, Plan, Programs};
use crate::attached::Registry;
use crate::bpf::types::file_id;
use crate::bpf::SslsniffSkel;
use crate::config::Config;
use crate::diag;
use crate::discover::Target;
use crate::event::{decode_found, FileId, Found};
use crate::follow::{self, Examined, Follow};

pub struct Follower {
    follow: Follow,
    pending: Vec<Found>,
    plan: Plan,
    /// Off with --no-follow: then nothing is released either, as nothing would attach
    /// a released file again.
    enabled: bool,
    pub attached: Registry,
}

impl Follower {
    /// Takes over the targets attached at start, loads them into the kernel's seen set,
    /// attaches the syscall hooks (connections; exec and mmap), and examines every running process's
    /// executable (node, static builds) as if it had just started.
    pub fn start(
        skel: &SslsniffSkel,
        cfg: &Config,
        plan: Plan,
        started: Vec<(Target, Vec<libbpf_rs::Link>)>,
    ) -> Result<Follower> {
        let mut me = Follower {
            follow: Follow::new(cfg.libraries.clone()),
            pending: Vec::new(),
            plan,
            enabled: cfg.follow,
            attached: Registry::new(),
        };
        for (target, links) in started {
            let (dev, ino) = target.file_id();
            let file = FileId::from_stat(dev, ino);
            me.seen(skel, file);
            let keep = target.requested || !cfg.follow;
            me.attached.add(Some(file), links, Some(target), keep);
        }
        if cfg.conn {
            let link = skel
                .progs
                .conn_fd
                .attach()
                .context("cannot attach connection tracking")?;
            me.attached.add(None, vec![link], None, true);
        }
        if cfg.follow {
            let progs = &skel.progs;
            // The tracepoint where it attaches, else the hook on every syscall exit.
            let traced = plan
                .mmap_tracepoint
                .and_then(|id| attach::attach_tracepoint(&progs.follow_mmap_tp, id).ok());
            let mmap = match traced {
                Some(link) => Ok(link),
                None => progs.follow_mmap.attach(),
            };
            for link in [progs.follow_exec.attach(), mmap] {
                let link = link.context("cannot follow new programs")?;
                me.attached.add(None, vec![link], None, true);
            }
        }
        me.pending = follow::running_executables(cfg.pid);
        me.attach_found(skel);
        Ok(me)
    }

    /// The `found` ring's callback.
    pub fn record(&mut self, raw: &[u8]) -> i32 {
        self.pending.extend(decode_found(raw));
        0
    }

    /// Between drains: attaches what was found, and now and then releases what no
    /// process maps any more.
    pub fn work(&mut self, skel: &SslsniffSkel) {
        self.attach_found(skel);
        let now = Instant::now();
        if !self.enabled || !self.attached.scan_due(now) {
            return;
        }
        let (released, links) = self.attached.release_unmapped(&follow::mapped_files(), now);
        for (file, name) in released {
            diag::notice(&format!("no longer traced: {name} (no process maps it)"));
            self.follow.forget(file);
            let key = key(file);
            // SAFETY: file_id is two u64s with no padding.
            let _ = skel
                .maps
                .seen_files
                .delete(unsafe { plain::as_bytes(&key) });
        }
        if !links.is_empty() {
            // Closing links waits out grace periods: not on the reader's thread.
            let multi = self.plan.multi;
            std::thread::spawn(move || attach::detach(links, multi));
        }
    }

    /// Tells the kernel not to report the file again.
    fn seen(&mut self, skel: &SslsniffSkel, file: FileId) {
        self.follow.mark(file);
        let key = key(file);
        // SAFETY: file_id is two u64s with no padding.
        let key = unsafe { plain::as_bytes(&key) };
        // A full map only means more wake-ups; never a reason to stop.
        let _ = skel.maps.seen_files.update(key, &[1], MapFlags::ANY);
    }

    fn attach_found(&mut self, skel: &SslsniffSkel) {
        for found in std::mem::take(&mut self.pending) {
            if let Examined::Targets { targets, display } = self.follow.examine(&found) {
                let origin = Origin {
                    pid: found.pid,
                    ts_ns: found.ts_ns,
                    display: &display,
                };
                for t in targets {
                    match attach::attach_target(&programs(skel), self.plan, &t, Some(&origin)) {
                        Ok(links) => self.attached.add(Some(found.file), links, Some(t), false),
                        Err(e) => diag::warn(&format!("{e:#}")),
                    }
                }
            }
            self.seen(skel, found.file);
        }
    }
}

fn key(file: FileId) -> file_id {
    file_id {
        dev: file.dev,
        ino: file.ino,
    }
}

pub fn programs<'a>(skel: &'a SslsniffSkel<'_>) -> Programs<'a> {
    Programs {
        enter: &skel.progs.tls_enter,
        exit: &skel.progs.tls_exit,
        go_enter: &skel.progs.go_enter,
        go_exit: &skel.progs.go_exit,
        aead: AeadPrograms {
            seal: &skel.progs.aead_seal,
            seal_scatter: &skel.progs.aead_seal_scatter,
            open: &skel.progs.aead_open,
            open_gather: &skel.progs.aead_open_gather,
            open_exit: &skel.progs.aead_open_exit,
        },
    }
}
