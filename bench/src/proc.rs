//! Child processes that are killed (by their PID) and reaped whichever way the benchmark
//! leaves the scope that started them, errors included.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Proc {
    child: Child,
    /// Reaped by wait4 behind std's back: its PID may already belong to someone else.
    reaped: bool,
}

/// What the kernel accounted to a child over its life.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu_s: f64,
    pub max_rss_kib: u64,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", cmd.get_program().to_string_lossy()))?;
        Ok(Proc {
            child,
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn wait(&mut self) -> Result<ExitStatus> {
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }

    pub fn interrupt(&self) -> Result<()> {
        // SAFETY: kill has no memory preconditions; the PID is our unreaped child's, so
        // it cannot name another process.
        if unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGINT) } != 0 {
            return Err(io::Error::last_os_error()).context("cannot send SIGINT");
        }
        Ok(())
    }

    /// Waits at most `timeout` for the child to exit, and returns what it used. std's
    /// wait throws the resource usage away, so this reaps with wait4 itself.
    pub fn wait_with_usage(&mut self, timeout: Duration) -> Result<(ExitStatus, Usage)> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: all-zero bytes are a valid rusage (plain integers and timevals).
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to live locals of the types wait4 writes.
            let pid = unsafe {
                libc::wait4(
                    self.pid() as libc::pid_t,
                    &mut status,
                    libc::WNOHANG,
                    &mut usage,
                )
            };
            match pid {
                0 if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                0 => bail!("PID {} did not exit within {timeout:?}", self.pid()),
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                -1 => return Err(io::Error::last_os_error()).context("wait4 failed"),
                _ => {
                    self.reaped = true;
                    return Ok((ExitStatus::from_raw(status), usage_of(&usage)));
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn usage_of(ru: &libc::rusage) -> Usage {
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Usage {
        cpu_s: secs(ru.ru_utime) + secs(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
    }
}
