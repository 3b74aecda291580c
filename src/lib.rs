//! sslsniff: the plaintext of TLS traffic, from eBPF uprobes on TLS libraries.
//!
//! The data path is one line: discover files (`discover`, `golang`, `symbols`) -> attach
//! probes (`probes`) -> kernel records (`kernel`) -> decode (`kernel::record`) ->
//! assemble calls into events (`assemble`) -> protocols (`proto`) -> format and write
//! (`output`), with `pump` driving the drain and `follow` attaching what starts later.
//! `tracer` puts the steps in order; the binary only parses flags and handles signals.

pub mod assemble;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod diag;
pub mod discover;
pub mod escape;
pub mod event;
pub mod follow;
pub mod golang;
/// Crafted files and header blocks, and the fuzzers' runner (shared with tests/ and bench/).
#[cfg(test)]
#[path = "../tests/common/hostile.rs"]
mod hostile;
pub mod kernel;
pub mod libs;
pub mod output;
pub mod probes;
pub mod procfs;
pub mod proto;
pub mod pump;
pub mod signatures;
pub mod symbolless;
pub mod symbols;
pub mod tracer;

/// Counts each thread's allocations: the fuzzers' measure of work.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: hostile::Counting = hostile::Counting;
