use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/floor.bpf.c";

fn main() {
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("floor.skel.rs");
    // The same flags as sslsniff's build: Debian's multiarch headers, and BPF CPU v3
    // because clang 14 defaults to v1.
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args(["-I/usr/include/x86_64-linux-gnu", "-mcpu=v3"])
        .build_and_generate(&out)
        .expect("failed to build and generate the BPF skeleton");
    println!("cargo:rerun-if-changed={SRC}");
}
