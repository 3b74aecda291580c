use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/sslsniff.bpf.c";
const HEADERS: [&str; 2] = ["src/bpf/sslsniff.h", "src/bpf/aead.bpf.h"];

fn main() {
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("sslsniff.skel.rs");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    // Debian's clang 14 defaults to BPF CPU v1, whose code the verifier rejects for
    // bounded variable-size reads; v3 keeps 32-bit bounds.
    let mut args = vec![
        format!("-I/usr/include/{arch}-linux-gnu"),
        "-mcpu=v3".to_string(),
    ];
    if let Ok(extra) = env::var("BPF_CFLAGS") {
        args.extend(extra.split_whitespace().map(str::to_string));
    }
    let mut builder = SkeletonBuilder::new();
    builder.source(SRC).clang_args(args);
    if let Some(clang) = env::var_os("CLANG") {
        builder.clang(clang);
    }
    builder
        .build_and_generate(&out)
        .expect("failed to build and generate the BPF skeleton");
    println!("cargo:rerun-if-changed={SRC}");
    for header in HEADERS {
        println!("cargo:rerun-if-changed={header}");
    }
    println!("cargo:rerun-if-env-changed=BPF_CFLAGS");
    println!("cargo:rerun-if-env-changed=CLANG");
}
