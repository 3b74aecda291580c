//! Holding a program whose file was never examined, from the moment the kernel reports
//! it until its TLS functions are attached: a program that calls TLS at once is then
//! captured from its first call. Attaching costs an RCU grace period (5-15 ms here,
//! docs/first-run.md), longer than such a program takes to reach its first call.
//!
//! A process is held with ptrace: every thread seized and interrupted, and waited for
//! until stopped (a stopped thread starts no other, so the last listing of its threads
//! is complete: no thread runs on unseen, and sslsniff traces no thread it does not
//! know of), then detached. A ptrace stop is not a job-control stop, so no shell sees
//! it, and the kernel lets every held process go if sslsniff dies. A stopped sslsniff
//! holds only the few processes it held at that moment (never more than MAX_HELD),
//! never a new one: unlike an exec permission (fanotify), nothing waits for sslsniff
//! unless it took hold of it first. A hold never lasts beyond HOLD_LIMIT.
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
/// Listings of a process's threads while seizing, at most.
const SEIZE_ROUNDS: usize = 8;
/// How long seized threads may take to stop (tens of microseconds, more when the CPUs
/// are busy); one that takes longer (stuck in the kernel, say on a dead NFS server)
/// means no hold. They are looked at every STOP_POLL meanwhile.
const STOP_LIMIT: Duration = Duration::from_millis(100);
const STOP_POLL: Duration = Duration::from_micros(50);
/// How often threads that have not stopped or died yet are looked at again; after
/// HOLD_LIMIT only every SLOW_RETRY.
const RETRY: Duration = Duration::from_millis(1);
const SLOW_RETRY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Seized, not yet seen stopped.
    Seized,
    /// In a ptrace stop; `signal` was on its way to it and is delivered at detach.
    Stopped { signal: Option<Signal> },
    /// Killed while held: it must be waited for, or its parent could never reap it.
    Dying,
    /// Detached, or its end seen.
    Gone,
}

struct Thread {
    tid: Pid,
    state: State,
}

/// One process held until its files are attached: a program's loader maps its libraries
/// one after the other, each a file of its own, and the process waits for all of them.
struct Held {
    pid: u32,
    files: Vec<FileId>,
    since: Instant,
    threads: Vec<Thread>,
    /// To be let go now.
    released: bool,
}

pub struct Holds {
    held: Vec<Held>,
    enabled: bool,
    own: u32,
}

impl Holds {
    /// Holds made from the calling thread, which then runs before ordinary threads.
    pub fn new(enabled: bool) -> Holds {
        if enabled {
            run_first();
        }
        Holds {
            held: Vec::new(),
            enabled,
            own: std::process::id(),
        }
    }

    /// Holds process `pid` until `file`, and any other file it waits for, is attached;
    /// says whether it is held. Never the machine's init (a stopped sslsniff holding it
    /// would hold the machine), nor sslsniff itself, nor a process that another tracer
    /// already holds.
    pub fn hold(&mut self, pid: u32, file: FileId) -> bool {
        if !self.enabled || pid <= 1 || pid == self.own {
            return false;
        }
        if let Some(h) = self.held.iter_mut().find(|h| h.pid == pid && !h.released) {
            h.files.push(file);
            return true;
        }
        if self.held.len() >= MAX_HELD {
            return false;
        }
        let (threads, whole) = seize(pid);
        if threads.is_empty() {
            return false;
        }
        self.held.push(Held {
            pid,
            files: vec![file],
            since: Instant::now(),
            threads,
            released: !whole,
        });
        if !whole {
            self.let_go();
        }
        whole
    }

    /// `file` is attached: lets go of every process that waited for it and for no other
    /// file still.
    pub fn release(&mut self, file: FileId) {
        for h in &mut self.held {
            h.files.retain(|&f| f != file);
            h.released |= h.files.is_empty();
        }
        self.let_go();
    }

    /// Lets go of the processes held for HOLD_LIMIT, and of the released ones whose
    /// threads could not be let go at once.
    pub fn release_expired(&mut self, now: Instant) {
        self.held
            .iter_mut()
            .filter(|h| now.duration_since(h.since) >= HOLD_LIMIT)
            .for_each(|h| h.released = true);
        self.let_go();
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

    /// Lets go of everything, waiting up to HOLD_LIMIT for dying threads to end; any
    /// left then are let go by the kernel when sslsniff's thread ends.
    pub fn release_all(&mut self) {
        self.held.iter_mut().for_each(|h| h.released = true);
        let started = Instant::now();
        self.let_go();
        while !self.held.is_empty() && started.elapsed() < HOLD_LIMIT {
            std::thread::sleep(RETRY);
            self.let_go();
        }
    }

    /// Detaches the threads of released processes; forgets a process once all its
    /// threads are gone.
    fn let_go(&mut self) {
        self.held.retain_mut(|h| {
            if h.released {
                h.threads.iter_mut().for_each(let_go);
            }
            h.threads.iter().any(|t| t.state != State::Gone)
        });
    }
}

/// Makes the calling thread (the listener) a real-time one, at the lowest priority: woken
/// by the report of a new program, it then runs at once rather than after its time slice
/// on a CPU busy with ordinary threads (a parallel build), during which a program that
/// calls TLS at once would have made all its calls. It only reads the report and seizes;
/// the examination runs on another thread. Failing (no CAP_SYS_NICE) only makes holds
/// later, as before.
fn run_first() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler reads the struct we pass and nothing else; pid 0 is the
    // calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

/// One step towards letting a thread go: detach it if stopped, else see whether it
/// stopped or ended.
fn let_go(t: &mut Thread) {
    match t.state {
        State::Stopped { signal } => {
            t.state = match ptrace::detach(t.tid, signal) {
                Ok(()) => State::Gone,
                // Not in its stop any more: only SIGKILL takes a thread out of it.
                Err(_) => State::Dying,
            };
        }
        State::Seized | State::Dying => {
            observe(t);
            if matches!(t.state, State::Stopped { .. }) {
                let_go(t);
            }
        }
        State::Gone => {}
    }
}

/// Seizes and interrupts every thread of `pid` and waits until all have stopped; the
/// threads seized, and whether that is all of them (if not, the caller lets them go).
fn seize(pid: u32) -> (Vec<Thread>, bool) {
    let mut threads: Vec<Thread> = Vec::new();
    let deadline = Instant::now() + STOP_LIMIT;
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
            match ptrace::seize(tid, Options::empty()) {
                Ok(()) => {
                    let _ = ptrace::interrupt(tid);
                    threads.push(Thread {
                        tid,
                        state: State::Seized,
                    });
                }
                // The thread ended meanwhile.
                Err(Errno::ESRCH) => {}
                // Traced by another (a debugger), or not permitted here.
                Err(_) => return (threads, false),
            }
        }
        if !all_stopped(&mut threads, deadline) {
            return (threads, false);
        }
    }
    (threads, false)
}

/// Waits until no seized thread runs, up to `deadline`.
fn all_stopped(threads: &mut [Thread], deadline: Instant) -> bool {
    loop {
        threads
            .iter_mut()
            .filter(|t| t.state == State::Seized)
            .for_each(observe);
        if threads.iter().all(|t| t.state != State::Seized) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(STOP_POLL);
    }
}

/// What became of a seized or dying thread, without waiting.
fn observe(t: &mut Thread) {
    let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
    t.state = match waitpid(t.tid, Some(flags)) {
        Ok(WaitStatus::StillAlive) => t.state,
        // Killed while stopped, it only ends.
        _ if t.state == State::Dying => State::Gone,
        // The interrupt's stop, or a job-control stop, which the kernel keeps after
        // the detach.
        Ok(WaitStatus::PtraceEvent(..)) => State::Stopped { signal: None },
        // A signal was on its way: it is delivered at detach.
        Ok(WaitStatus::Stopped(_, signal)) => State::Stopped {
            signal: Some(signal),
        },
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => State::Gone,
        Ok(_) => State::Stopped { signal: None },
    };
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

    /// A python3 that starts a thread every millisecond, each living 50 ms.
    const SPAWNER: &str = "python3 -c 'import threading, time\n\
        while True: threading.Thread(target=time.sleep, args=(0.05,)).start(); time.sleep(0.001)'";

    #[test]
    fn threads_born_while_seizing_are_held_too_and_a_kill_is_reaped() {
        let (sh, out, pid) = under_sh(&format!("{SPAWNER} & echo $!; wait $!; echo status $?"));
        until("threads", || procfs::tasks(pid).len() > 10);
        let mut holds = Holds::new(true);
        assert!(holds.hold(pid, FILE));
        // Every thread stopped at once, and no thread runs on to start another.
        let held = procfs::tasks(pid);
        assert!(states(pid).iter().all(|&s| s == 't'), "{:?}", states(pid));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(procfs::tasks(pid), held);
        // Killed while held, then let go: its parent reaps it.
        let target = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(target, Signal::SIGKILL).unwrap();
        let_go(&mut holds);
        assert_eq!(last_line(sh, out), "status 137");
    }

    #[test]
    fn a_process_that_reveals_several_files_waits_for_all() {
        let (sh, out, pid) = under_sh("sleep 5 & echo $!; wait $!; echo status $?");
        let other = FileId { dev: 1, ino: 3 };
        let mut holds = Holds::new(true);
        assert!(holds.hold(pid, FILE));
        assert!(holds.hold(pid, other), "held for the second file too");
        until("held", || states(pid) == ['t']);
        holds.release(FILE);
        std::thread::sleep(Duration::from_millis(20));
        holds.release_expired(Instant::now());
        assert_eq!(states(pid), ['t'], "still waiting for the other file");
        holds.release(other);
        until("let go", || {
            holds.release_expired(Instant::now());
            holds.held.is_empty()
        });
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
        assert_eq!(last_line(sh, out), "status 143");
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
