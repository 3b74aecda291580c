//! Holding a program whose file was never examined, from the moment the kernel reports
//! it until its TLS functions are attached: a program that calls TLS at once is then
//! captured from its first call. Attaching costs an RCU grace period (5-15 ms here,
//! docs/first-run.md), longer than such a program takes to reach its first call.
//!
//! A process is held with ptrace (seized and interrupted, every thread, then detached):
//! a ptrace stop is not a job-control stop, so no shell sees it, and the kernel itself
//! lets every held process go if sslsniff dies. A stopped sslsniff holds only the few
//! processes it held at that moment (never more than MAX_HELD), never a new one: unlike
//! an exec permission (fanotify), nothing waits for sslsniff unless it took hold of it
//! first. A hold never lasts beyond HOLD_LIMIT, whatever the examination costs.
//!
//! Every ptrace request must come from the thread that seized the process: a `Holds`
//! lives and is used on one thread.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::procfs::{self, FileId};

/// The longest a process is held: longer than the slowest examination measured (a
/// symbol-less scan of Bun, 440 ms under load), short enough that a slow sslsniff only
/// slows the first run of new programs.
pub const HOLD_LIMIT: Duration = Duration::from_secs(1);
/// Processes held at once at most; beyond it new ones run unheld, as without holding.
const MAX_HELD: usize = 64;
/// A process with more threads than this is not held.
const MAX_THREADS: usize = 1024;
/// Listings of a process's threads while seizing, at most: threads born meanwhile are
/// seized on the next round (and those born of seized threads are seized by the kernel).
const SEIZE_ROUNDS: usize = 8;
/// How often threads that have not stopped yet are looked at again; after HOLD_LIMIT
/// (a thread stuck in the kernel, say on a dead NFS server) only every SLOW_RETRY.
const RETRY: Duration = Duration::from_millis(1);
const SLOW_RETRY: Duration = Duration::from_millis(50);

/// One seized thread.
struct Thread {
    tid: Pid,
    /// Seen in a ptrace stop (or gone): it may be detached.
    settled: bool,
    /// A signal it was about to receive when it stopped, delivered again at detach.
    signal: Option<Signal>,
    gone: bool,
}

impl Thread {
    fn new(tid: Pid) -> Thread {
        Thread {
            tid,
            settled: false,
            signal: None,
            gone: false,
        }
    }
}

/// One process held for one file.
struct Held {
    file: FileId,
    since: Instant,
    threads: Vec<Thread>,
    /// To be let go as soon as all its threads are settled.
    released: bool,
}

pub struct Holds {
    held: Vec<Held>,
    enabled: bool,
    own: u32,
}

impl Holds {
    pub fn new(enabled: bool) -> Holds {
        Holds {
            held: Vec::new(),
            enabled,
            own: std::process::id(),
        }
    }

    /// Holds process `pid` until `file` is released; says whether it is held. Never
    /// the machine's init (a stopped sslsniff holding it would hold the machine), nor
    /// sslsniff itself, nor a process that another tracer already holds.
    pub fn hold(&mut self, pid: u32, file: FileId) -> bool {
        if !self.enabled || pid <= 1 || pid == self.own || self.held.len() >= MAX_HELD {
            return false;
        }
        let (threads, whole) = seize(pid);
        if threads.is_empty() {
            return false;
        }
        self.held.push(Held {
            file,
            since: Instant::now(),
            threads,
            released: !whole,
        });
        if !whole {
            self.detach_released();
        }
        whole
    }

    /// Lets go of every process held for `file`.
    pub fn release(&mut self, file: FileId) {
        self.held
            .iter_mut()
            .filter(|h| h.file == file)
            .for_each(|h| h.released = true);
        self.detach_released();
    }

    /// Lets go of the processes held for HOLD_LIMIT, and detaches what has settled.
    pub fn release_expired(&mut self, now: Instant) {
        self.held
            .iter_mut()
            .filter(|h| now.duration_since(h.since) >= HOLD_LIMIT)
            .for_each(|h| h.released = true);
        self.detach_released();
    }

    /// How long the caller may sleep before it must call `release_expired` again.
    pub fn next_wake(&self, now: Instant) -> Option<Duration> {
        self.held
            .iter()
            .map(|h| {
                let held_for = now.duration_since(h.since);
                match h.released {
                    false => HOLD_LIMIT.saturating_sub(held_for),
                    true if held_for < 2 * HOLD_LIMIT => RETRY,
                    true => SLOW_RETRY,
                }
            })
            .min()
    }

    /// Lets go of everything, waiting up to HOLD_LIMIT for threads to settle; any left
    /// then are let go by the kernel when sslsniff exits.
    pub fn release_all(&mut self) {
        self.held.iter_mut().for_each(|h| h.released = true);
        let started = Instant::now();
        self.detach_released();
        while !self.held.is_empty() && started.elapsed() < HOLD_LIMIT {
            std::thread::sleep(RETRY);
            self.detach_released();
        }
    }

    /// Detaches the released processes whose threads have all settled.
    fn detach_released(&mut self) {
        self.held.retain_mut(|h| {
            if !h.released || !settle_all(&mut h.threads) {
                return true;
            }
            for t in h.threads.iter().filter(|t| !t.gone) {
                // A thread that died since its stop needs nothing more.
                let _ = ptrace::detach(t.tid, t.signal);
            }
            false
        });
    }
}

/// Seizes and interrupts every thread of `pid`; the threads seized, and whether that
/// is all of them (if not, the caller lets them go again).
fn seize(pid: u32) -> (Vec<Thread>, bool) {
    let mut threads: Vec<Thread> = Vec::new();
    for _ in 0..SEIZE_ROUNDS {
        let new: Vec<Pid> = procfs::tasks(pid)
            .into_iter()
            .map(|tid| Pid::from_raw(tid as i32))
            .filter(|tid| threads.iter().all(|t| t.tid != *tid))
            .collect();
        if new.is_empty() {
            return (threads, true);
        }
        if threads.len() + new.len() > MAX_THREADS {
            return (threads, false);
        }
        for tid in new {
            match ptrace::seize(tid, Options::PTRACE_O_TRACECLONE) {
                Ok(()) => {
                    let _ = ptrace::interrupt(tid);
                    threads.push(Thread::new(tid));
                }
                // The thread ended meanwhile.
                Err(Errno::ESRCH) => {}
                // Traced by another (a debugger), or not permitted here.
                Err(_) => return (threads, false),
            }
        }
    }
    (threads, false)
}

/// Looks at each unsettled thread without waiting; true when all are settled. Threads
/// born of a seized one (the kernel seized them) are added.
fn settle_all(threads: &mut Vec<Thread>) -> bool {
    let mut born = Vec::new();
    for t in threads.iter_mut().filter(|t| !t.settled) {
        settle(t, &mut born);
    }
    let any_born = !born.is_empty();
    threads.extend(born.into_iter().map(Thread::new));
    !any_born && threads.iter().all(|t| t.settled)
}

fn settle(t: &mut Thread, born: &mut Vec<Pid>) {
    let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
    match waitpid(t.tid, Some(flags)) {
        Ok(WaitStatus::StillAlive) => return,
        // The interrupt's stop, a job-control stop (kept after detach by the kernel),
        // or a new thread's report.
        Ok(WaitStatus::PtraceEvent(_, _, event)) => {
            if event == libc::PTRACE_EVENT_CLONE {
                if let Ok(tid) = ptrace::getevent(t.tid) {
                    born.push(Pid::from_raw(tid as i32));
                }
            }
        }
        // A signal was on its way: it is delivered at detach.
        Ok(WaitStatus::Stopped(_, signal)) => t.signal = Some(signal),
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => t.gone = true,
        Ok(_) => {}
    }
    t.settled = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    const FILE: FileId = FileId { dev: 1, ino: 2 };

    /// `script` run by sh with `$!` printed first: the process held is sh's child (a
    /// descendant of the test, which any ptrace policy lets it trace), sh its parent.
    fn under_sh(script: &str) -> (Child, BufReader<std::process::ChildStdout>, u32) {
        let mut sh = Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(sh.stdout.take().unwrap());
        let mut pid = String::new();
        out.read_line(&mut pid).unwrap();
        (sh, out, pid.trim().parse().unwrap())
    }

    /// The states of the process's threads, as /proc/PID/task/*/stat give them.
    fn states(pid: u32) -> Vec<char> {
        procfs::tasks(pid)
            .iter()
            .filter_map(|tid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
                stat.rsplit_once(") ")?.1.chars().next()
            })
            .collect()
    }

    fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Releases `file` and waits until every hold is gone.
    fn let_go(holds: &mut Holds) {
        holds.release(FILE);
        until("all detached", || {
            holds.release_expired(Instant::now());
            holds.held.is_empty()
        });
    }

    fn last_line(mut sh: Child, mut out: BufReader<std::process::ChildStdout>) -> String {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert!(sh.wait().unwrap().success());
        rest.trim().to_string()
    }

    #[test]
    fn every_thread_stops_and_goes_on_unseen_by_its_parent() {
        let script = "python3 -c 'import threading, time\n\
            for _ in range(4): threading.Thread(target=time.sleep, args=(0.5,)).start()\n\
            time.sleep(0.5)' & echo $!; wait $!; echo status $?";
        let (sh, out, pid) = under_sh(script);
        until("five threads", || procfs::tasks(pid).len() == 5);
        let mut holds = Holds::new(true);
        assert!(holds.hold(pid, FILE));
        until("all held", || states(pid).iter().all(|&s| s == 't'));
        // A second tracer (here the same one) cannot take what is held.
        assert!(!Holds::new(true).hold(pid, FILE));
        let_go(&mut holds);
        assert!(states(pid).iter().all(|&s| s != 't'), "{:?}", states(pid));
        assert_eq!(last_line(sh, out), "status 0");
    }

    #[test]
    fn signals_sent_while_held_arrive_after() {
        let (sh, out, pid) = under_sh("sleep 5 & echo $!; wait $!; echo status $?");
        let mut holds = Holds::new(true);
        assert!(holds.hold(pid, FILE));
        until("held", || states(pid) == ['t']);
        let target = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(target, Signal::SIGTERM).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(states(pid), ['t'], "still held, the signal waiting");
        let_go(&mut holds);
        assert_eq!(last_line(sh, out), "status 143");
    }

    #[test]
    fn a_holder_that_dies_holding_lets_go_all_the_same() {
        let (sh, out, pid) = under_sh("sleep 0.3 & echo $!; wait $!; echo status $?");
        std::thread::spawn(move || {
            let mut holds = Holds::new(true);
            assert!(holds.hold(pid, FILE));
            until("held", || states(pid) == ['t']);
            // The tracer thread ends with its tracees still held: the kernel detaches them.
            std::mem::forget(holds);
        })
        .join()
        .unwrap();
        assert_eq!(last_line(sh, out), "status 0");
    }

    #[test]
    fn a_hold_ends_by_itself_and_never_on_init_or_when_off() {
        let (sh, out, pid) = under_sh("sleep 1.5 & echo $!; wait $!; echo status $?");
        assert!(!Holds::new(false).hold(pid, FILE));
        assert!(!Holds::new(true).hold(1, FILE));
        let mut holds = Holds::new(true);
        assert!(holds.hold(pid, FILE));
        until("held", || states(pid) == ['t']);
        let held_at = Instant::now();
        until("let go after HOLD_LIMIT", || {
            holds.release_expired(Instant::now());
            holds.held.is_empty()
        });
        assert!(held_at.elapsed() >= HOLD_LIMIT - Duration::from_millis(100));
        assert_eq!(last_line(sh, out), "status 0");
    }
}
