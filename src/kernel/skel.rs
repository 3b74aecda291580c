//! The generated skeleton, included here only: the event layout comes from
//! `src/bpf/sslsniff.h` through the skeleton's `types`, never from a hand-kept mirror, and
//! nothing outside `kernel/` sees it.
#![allow(
    clippy::all,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused_imports
)]

include!(concat!(env!("OUT_DIR"), "/sslsniff.skel.rs"));

// SAFETY: these are `repr(C)` structs of integers (and integer-backed enum newtypes)
// with no invalid bit patterns, so any bytes of the right length are a valid value.
unsafe impl plain::Plain for types::event_hdr {}
// SAFETY: as above.
unsafe impl plain::Plain for types::stats {}
// SAFETY: as above.
unsafe impl plain::Plain for types::found_event {}
// SAFETY: as above.
unsafe impl plain::Plain for types::file_id {}
