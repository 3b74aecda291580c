//! The kernel matrix's machinery: a kernel from Debian (kernel.rs), a root file system
//! (initramfs.rs) whose /init (init.sh) runs the cases, qemu, and each case's outputs
//! read back from the serial console.

pub mod initramfs;
pub mod kernel;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::common::Proc;
use kernel::run;

/// The VM's /init.
pub const INIT: &str = include_str!("init.sh");

/// KVM where a real one exists; TCG otherwise. A paravirtual KVM (kvm_pvm, as on these
/// machines) opens /dev/kvm but cannot run an ordinary guest.
pub fn accel() -> &'static str {
    let real = ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
        .iter()
        .any(|m| Path::new(m).exists());
    if real && File::open("/dev/kvm").is_ok() {
        "kvm"
    } else {
        "tcg"
    }
}

/// What a boot left: the console, and a directory per block the VM printed.
pub struct Boot {
    pub console: String,
    pub took: Duration,
    /// Whether the VM printed its last line (every case ran) and powered off in time.
    pub finished: bool,
    pub qemu_stderr: String,
    pub results: PathBuf,
}

impl Boot {
    /// The directory of what block `name` carried, if the VM printed it.
    pub fn block(&self, name: &str) -> Option<PathBuf> {
        Some(self.results.join(name)).filter(|d| d.is_dir())
    }

    /// The console's last lines, for a failure message.
    pub fn console_tail(&self) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Boots `vmlinuz` with `initrd` under qemu, with everything it writes in `dir`, and
/// stops it after `limit` if it has not powered off by then.
pub fn boot(vmlinuz: &Path, initrd: &Path, dir: &Path, limit: Duration) -> Boot {
    let log = dir.join("console.log");
    let mut qemu = Proc::spawn(
        "qemu-system-x86_64 (Debian package qemu-system-x86)",
        Command::new("qemu-system-x86_64")
            .args(["-machine", &format!("q35,accel={}", accel())])
            .args(["-cpu", "max", "-smp", "1", "-m", "2048"])
            .arg("-kernel")
            .arg(vmlinuz)
            .arg("-initrd")
            .arg(initrd)
            .args([
                "-append",
                "console=ttyS0 rdinit=/init panic=-1 loglevel=4 random.trust_cpu=on",
            ])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(dir.join("qemu.err")).unwrap()),
    );
    let start = Instant::now();
    let exited = loop {
        if let Some(status) = qemu.child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let took = start.elapsed();
    drop(qemu); // killed if still running
    let console = String::from_utf8_lossy(&fs::read(&log).unwrap()).into_owned();
    let results = dir.join("results");
    let _ = fs::remove_dir_all(&results);
    fs::create_dir_all(&results).unwrap();
    unpack_blocks(&console, &results);
    Boot {
        finished: exited.is_some_and(|s| s.success()) && console.contains("===SSLSNIFF-DONE==="),
        qemu_stderr: fs::read_to_string(dir.join("qemu.err")).unwrap_or_default(),
        console,
        took,
        results,
    }
}

/// Unpacks each `===SSLSNIFF-BEGIN NAME===` ... `===SSLSNIFF-END NAME===` block (a
/// gzipped tar in base64) of the console into `into/NAME`.
fn unpack_blocks(console: &str, into: &Path) {
    let mut block: Option<(&str, String)> = None;
    for line in console.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(name) = marker(line, "BEGIN") {
            block = Some((name, String::new()));
        } else if let Some(name) = marker(line, "END") {
            if let Some((begun, text)) = block.take().filter(|(b, _)| *b == name) {
                unpack(begun, &text, into);
            }
        } else if let Some((_, text)) = block.as_mut() {
            text.push_str(line.trim());
        }
    }
}

/// The name in a marker line; what the firmware and kernel printed may come first.
fn marker<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line[line.find("===SSLSNIFF-")?..]
        .strip_prefix("===SSLSNIFF-")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("===")
}

fn unpack(name: &str, text: &str, into: &Path) {
    let tar = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("the console's block {name} is not base64: {e}"));
    let file = into.join(format!("{name}.tar.gz"));
    fs::write(&file, tar).unwrap();
    let dir = into.join(name);
    fs::create_dir_all(&dir).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&file)
        .arg("-C")
        .arg(&dir));
}
