//! Closing links. Multi-uprobe links close side by side, and their waits for RCU grace
//! periods overlap. Perf-event links (kernels before 6.6) do not: the kernel serialises
//! their release, about 100 ms each here, so 200 library copies took minutes. For those a
//! child process takes over the last reference of each link and releases them after we
//! are gone; the caller has already told the programs to stop, so until then a probe
//! costs the traced program only its trap.

use libbpf_rs::Link;

/// How many threads close links at once: enough that the grace periods of hundreds of
/// links overlap, few enough to stay cheap.
const DETACH_THREADS: usize = 256;

/// At exit: perf-event links (`multi` false), more than one, are handed to a child that
/// releases them once we are gone; the others are closed now.
pub fn close_at_exit(links: Vec<Link>, multi: bool) {
    if !multi && links.len() > 1 && hand_off() {
        // libbpf's destroy would disable each perf event first, which waits as long as
        // the release; our descriptors close with the process, now that the child
        // holds the last reference of each.
        std::mem::forget(links);
        return;
    }
    close(links);
}

/// Closes links side by side, so that their waits for grace periods overlap.
pub fn close(links: Vec<Link>) {
    let threads = DETACH_THREADS.min(links.len()).max(1);
    let mut shares: Vec<Vec<Link>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, link) in links.into_iter().enumerate() {
        shares[i % threads].push(link);
    }
    std::thread::scope(|scope| {
        for share in shares {
            scope.spawn(move || drop(share));
        }
    });
}

/// Forks a child that releases the links once we are gone; says whether it did.
/// Failing to fork only means closing them here, slowly.
fn hand_off() -> bool {
    // SAFETY: getpid takes nothing and cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child of a threaded process may call only async-signal-safe functions:
    // it makes raw close_range/getppid/nanosleep/_exit system calls and touches no
    // allocator, lock or Rust object.
    unsafe {
        match libc::fork() {
            0 => {}
            -1 => return false,
            _ => return true,
        }
        // stdin, stdout and stderr at once: whoever reads our output sees its end when
        // we exit, not when the last probe is released.
        libc::syscall(libc::SYS_close_range, 0u32, 2u32, 0u32);
        // The last reference releases a probe, and whoever holds it waits: wait until
        // the parent has exited (its references dropped), then release everything it
        // held. libbpf-rs does not say which descriptors belong to a link (a bpf_link
        // and its perf event), so all of them go.
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        while libc::getppid() == parent {
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::_exit(0);
    }
}
