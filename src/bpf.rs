//! The only place that sees the generated skeleton. The event layout comes from
//! `src/bpf/sslsniff.h` through the skeleton's `types`, never from a hand-kept mirror.
#![allow(
    clippy::all,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused_imports
)]

include!(concat!(env!("OUT_DIR"), "/sslsniff.skel.rs"));

// SAFETY: both are `repr(C)` structs of integers (and an integer-backed enum newtype)
// with no invalid bit patterns, so any bytes of the right length are a valid value.
unsafe impl plain::Plain for types::event_hdr {}
// SAFETY: as above.
unsafe impl plain::Plain for types::stats {}
// SAFETY: as above.
unsafe impl plain::Plain for types::found_event {}
