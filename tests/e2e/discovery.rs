//! Seeing every TLS program: private library copies, other mount namespaces, static
//! binaries, and libraries beyond OpenSSL.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Runs a fixture client (`PROG PORT MESSAGE`) to completion.
fn run_fixture(exe: &Path, port: u16, message: &str) -> Proc {
    run_client(
        "fixture client",
        Command::new(exe)
            .arg(port.to_string())
            .arg(message)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

fn library_client_is_captured(test: &str, source: &str, flags: &[&str], sniffer_args: &[&str]) {
    if !root_or_skip(test) {
        return;
    }
    let work = Workdir::new();
    let exe = build_fixture(&work, source, "client", flags);
    let (_server, port) = https_server(&work);
    let (request, body) = page(&work, test);

    let sniffer = Sniffer::start(sniffer_args);
    let client = run_fixture(&exe, port, &request);
    let out = sniffer.stop();
    assert_both_directions(&out, &rows(&out.stdout), client.pid(), &request, &body);
}

#[test]
fn wolfssl_client_is_captured() {
    library_client_is_captured("wolfssl", "wolfssl_client.c", &["-lwolfssl"], &[]);
}

#[test]
fn mbedtls_client_is_captured() {
    library_client_is_captured(
        "mbedtls",
        "mbedtls_client.c",
        &["-lmbedtls", "-lmbedx509", "-lmbedcrypto"],
        &[],
    );
}

#[test]
fn boringssl_client_is_captured() {
    let android = "/usr/lib/x86_64-linux-gnu/android";
    let rpath = format!("-Wl,-rpath,{android}");
    let libdir = format!("-L{android}");
    let extra = format!("openssl:{android}/libssl.so.0");
    library_client_is_captured(
        "boringssl",
        "openssl_client.c",
        &[
            "-DREQUIRE_BORINGSSL",
            "-I/usr/include/android",
            &libdir,
            "-lssl",
            "-lcrypto",
            &rpath,
        ],
        &["--extra-lib", &extra],
    );
}

#[test]
fn static_binary_is_captured_with_binary_and_pid() {
    if !root_or_skip("static_binary_is_captured_with_binary_and_pid") {
        return;
    }
    let work = Workdir::new();
    let exe = build_static_client(&work, "static_client");
    let (_server, port) = https_server(&work);

    let (request, body) = page(&work, "static-binary");
    let sniffer = Sniffer::start(&["--binary", exe.to_str().unwrap()]);
    let client = run_fixture(&exe, port, &request);
    let out = sniffer.stop();
    assert!(out.traced("static_client", "openssl"), "{}", out.stderr);
    assert_both_directions(&out, &rows(&out.stdout), client.pid(), &request, &body);

    // With -p, the executable is checked for TLS functions by itself.
    let (request, body) = page(&work, "static-pid");
    let mut client = Proc::spawn(
        "static client",
        Command::new(&exe)
            .arg(port.to_string())
            .arg(&request)
            .env("SSLSNIFF_GATE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let sniffer = Sniffer::start(&["-p", &client.pid().to_string()]);
    writeln!(client.child.stdin.take().unwrap()).unwrap();
    assert!(client.wait_timeout(Duration::from_secs(20)).success());
    let out = sniffer.stop();
    assert_both_directions(&out, &rows(&out.stdout), client.pid(), &request, &body);
}

/// A python3 client whose libssl is a private copy, waiting to be released.
fn gated_python_with(work: &Workdir, port: u16, request: &str, wrap: &mut Command) -> Proc {
    let python = python_client(
        port,
        &format!("b'{}'", request.replace("\r\n", "\\r\\n")),
        true,
    );
    let args: Vec<_> = python.get_args().collect();
    Proc::spawn(
        "python3 with a private libssl",
        wrap.arg("python3")
            .args(args)
            .current_dir(work.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    )
}

fn release(client: &mut Proc) {
    writeln!(client.child.stdin.take().unwrap()).unwrap();
    assert!(client.wait_timeout(Duration::from_secs(20)).success());
}

#[test]
fn private_library_copy_is_captured_without_flags_and_with_pid() {
    if !root_or_skip("private_library_copy_is_captured_without_flags_and_with_pid") {
        return;
    }
    let work = Workdir::new();
    let libdir = work.path().join("private-lib");
    std::fs::create_dir(&libdir).unwrap();
    std::fs::copy(
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        libdir.join("libssl.so.3"),
    )
    .unwrap();
    let (_server, port) = https_server(&work);

    for pid_flag in [false, true] {
        let (request, body) = page(&work, "private-copy");
        let mut env = Command::new("env");
        env.arg(format!("LD_LIBRARY_PATH={}", libdir.display()));
        let mut client = gated_python_with(&work, port, &request, &mut env);
        let pid = client.pid().to_string();
        // Let python load its libssl before the sniffer looks at its maps.
        wait_for_mapping(client.pid(), "libssl.so.3");
        let args: &[&str] = if pid_flag { &["-p", &pid] } else { &[] };
        let sniffer = Sniffer::start(args);
        release(&mut client);
        let out = sniffer.stop();
        assert!(
            out.traced("private-lib/libssl.so.3", "openssl"),
            "{}",
            out.stderr
        );
        assert_both_directions(&out, &rows(&out.stdout), client.pid(), &request, &body);
    }
}

#[test]
fn process_in_its_own_mount_namespace_is_captured_with_pid() {
    if !root_or_skip("process_in_its_own_mount_namespace_is_captured_with_pid") {
        return;
    }
    let work = Workdir::new();
    let copy = work.path().join("libssl-copy.so.3");
    std::fs::copy("/usr/lib/x86_64-linux-gnu/libssl.so.3", &copy).unwrap();
    let (_server, port) = https_server(&work);
    let (request, body) = page(&work, "namespace");

    // unshare execs sh, which execs python3: one PID throughout, whose libssl is a copy
    // seen only inside its mount namespace.
    let script = format!(
        "mount --bind {} /usr/lib/x86_64-linux-gnu/libssl.so.3 && exec \"$0\" \"$@\"",
        copy.display()
    );
    let mut unshare = Command::new("unshare");
    unshare.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let mut client = gated_python_with(&work, port, &request, &mut unshare);
    wait_for_mapping(client.pid(), "libssl.so.3");
    let sniffer = Sniffer::start(&["-p", &client.pid().to_string()]);
    release(&mut client);
    let out = sniffer.stop();
    let root = format!(
        "/proc/{}/root/usr/lib/x86_64-linux-gnu/libssl.so.3",
        client.pid()
    );
    assert!(
        out.traced(&root, "openssl"),
        "not traced through its own root:\n{}",
        out.stderr
    );
    assert_both_directions(&out, &rows(&out.stdout), client.pid(), &request, &body);
}
