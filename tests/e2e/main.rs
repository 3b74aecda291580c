//! End-to-end tests: the real binary, as root, against real TLS peers on 127.0.0.1,
//! asserting on the exact plaintext captured. One binary, one module per subject, over
//! one harness (`common`); the kernel matrix (`tests/kernels.rs`) is a binary of its own,
//! as it boots other kernels rather than tracing this one.

#[path = "../common/mod.rs"]
mod common;

mod capture;
mod cases;
mod connections;
mod containers;
mod discovery;
mod errors;
mod follow;
mod formats;
mod full_payloads;
mod go_releases;
mod golang;
mod hardening;
mod hostile_files;
mod hostile_input;
mod http;
mod symbolless;
