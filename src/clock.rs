//! The clocks: the kernel stamps events with CLOCK_MONOTONIC (`bpf_ktime_get_ns`), and
//! people and capture files want wall-clock time.

use nix::time::{clock_gettime, ClockId};

/// A clock in nanoseconds; the clocks read here cannot fail on Linux.
fn clock_ns(id: ClockId) -> u64 {
    clock_gettime(id).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    })
}

/// `bpf_ktime_get_ns()`'s clock.
pub fn monotonic_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC)
}

/// Wall-clock time minus the monotonic clock that event timestamps use.
pub fn realtime_offset_ns() -> u64 {
    clock_ns(ClockId::CLOCK_REALTIME).saturating_sub(monotonic_ns())
}
