//! Processes: the one named by `-p`, checked before anything is attached and watched so
//! that sslsniff ends when it does (as `strace -p` does), and the list of all of them.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Result};

/// The process of `-p`, or every process on the machine.
pub fn pids(only: Option<u32>) -> Vec<u32> {
    match only {
        Some(pid) => vec![pid],
        None => fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// PF_KTHREAD in /proc/PID/stat's flags: a kernel thread runs no user code.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Refuses a PID that cannot make TLS calls, with the reason.
pub fn check(pid: u32) -> Result<()> {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        bail!("no process with PID {pid}");
    };
    // The command name in parentheses may contain anything, ')' too: fields start after
    // the last one.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let state = fields.first().copied().unwrap_or("?");
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    if state == "Z" || state == "X" {
        bail!("process {pid} has exited (a zombie waiting for its parent): it makes no more calls");
    }
    if flags & PF_KTHREAD != 0 {
        bail!("process {pid} is a kernel thread: it runs no TLS library");
    }
    Ok(())
}

/// A process that can be asked, without blocking, whether it has exited.
pub struct Watch {
    pidfd: OwnedFd,
}

impl Watch {
    pub fn new(pid: u32) -> Result<Watch> {
        // SAFETY: pidfd_open takes two integers; a non-negative result is a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            bail!(
                "cannot watch process {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: the kernel just gave us this fd.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Watch { pidfd })
    }

    /// A pidfd becomes readable when its process exits.
    pub fn exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_child_is_watched_until_it_exits() {
        let mut child = Command::new("sleep").arg("0.2").spawn().unwrap();
        check(child.id()).unwrap();
        let watch = Watch::new(child.id()).unwrap();
        assert!(!watch.exited());
        child.wait().unwrap();
        assert!(watch.exited());
    }

    #[test]
    fn zombies_and_kernel_threads_are_refused_with_the_reason() {
        let child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for: a zombie until the test ends.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let err = check(pid).unwrap_err().to_string();
        assert!(err.contains("has exited"), "{err}");
        drop(child);
        // kthreadd is PID 2 on every Linux.
        let err = check(2).unwrap_err().to_string();
        assert!(err.contains("kernel thread"), "{err}");
        assert!(check(4_194_305).is_err());
    }
}
