//! Bad input: one clear line on stderr and a non-zero exit, never a panic.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn sslsniff(args: &[&str]) -> (i32, String) {
    let out = Command::new(SNIFFER).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, stderr) = sslsniff(args);
    assert_ne!(code, 0, "{args:?} succeeded");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?} printed more than one line:\n{stderr}"
    );
    assert!(stderr.starts_with("sslsniff: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected `{needle}` in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_flag_and_bad_values() {
    assert_one_line_error(&["--no-such-flag"], "--no-such-flag");
    assert_one_line_error(
        &["--extra-lib", "schannel:/tmp/x"],
        "unknown library type 'schannel'",
    );
    assert_one_line_error(&["-p", "notapid"], "notapid");
}

#[test]
fn nonexistent_pid_and_missing_library() {
    if !root_or_skip("nonexistent_pid_and_missing_library") {
        return;
    }
    // Above the kernel's pid_max limit (4194304), so it cannot exist.
    assert_one_line_error(&["-p", "4194305"], "no process with PID 4194305");
    assert_one_line_error(
        &["--extra-lib", "openssl:/nonexistent/libssl.so.3"],
        "/nonexistent/libssl.so.3",
    );
    // A real ELF file without any TLS function.
    assert_one_line_error(&["--extra-lib", "gnutls:/bin/true"], "defines none of");
}

#[test]
fn unprivileged_user_is_told_to_use_root() {
    if !root_or_skip("unprivileged_user_is_told_to_use_root") {
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            SNIFFER,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs root (CAP_SYS_ADMIN)"), "{stderr}");
}

#[test]
fn ends_quietly_when_its_reader_goes_away() {
    if !root_or_skip("ends_quietly_when_its_reader_goes_away") {
        return;
    }
    let work = Workdir::new();
    let (request, _) = page(&work, "epipe");
    let (_server, port) = https_server(&work);
    let mut sniffer = Proc::spawn(
        "sslsniff",
        Command::new(SNIFFER)
            .args(["-c", "python3"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // Like `sslsniff | head -c 10`: read a little, then close the pipe.
    let mut stdout = sniffer.child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let payload = format!("b'{}'", request.replace("\r\n", "\\r\\n"));
    // The next write finds the pipe closed; a few calls make sure one comes.
    for _ in 0..3 {
        run_client("python3", &mut python_client(port, &payload, false));
    }
    let status = sniffer.wait_timeout(Duration::from_secs(10));
    let mut stderr = String::new();
    sniffer
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        !stderr.contains("error")
            && !stderr.contains("panicked")
            && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}
