//! Files that other users and containers control: what is not a regular file, endless
//! and huge inputs, and libraries inside another root, which are traced as the very file
//! the process maps and never as a host file that a path in that root leads to.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// What a refused start may cost: the old start-up read whole files into memory.
const MAX_RSS_KIB: u64 = 50 << 10;

/// Runs the sniffer, which must refuse at once: a non-zero exit within a second, one
/// line on stderr that contains `expect`, and a peak RSS under MAX_RSS_KIB (measured by
/// GNU time, which the test needs).
fn assert_refused(args: &[&str], expect: &str) {
    let rss = tempfile::NamedTempFile::new().unwrap();
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "this test measures peak RSS with GNU time: install `time`"
    );
    let started = Instant::now();
    let mut proc = Proc::spawn(
        "sslsniff under /usr/bin/time",
        Command::new(time)
            .args(["-f", "%M", "-o"])
            .arg(rss.path())
            .arg(SNIFFER)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let status = proc.wait_timeout(Duration::from_secs(1));
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    proc.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{args:?} was accepted:\n{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: not one line:\n{stderr}"
    );
    assert!(stderr.contains(expect), "{args:?}: {stderr}");
    // GNU time writes "Command exited with non-zero status N" first, then the format.
    let report = fs::read_to_string(rss.path()).unwrap();
    let peak: u64 = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in GNU time's report: {report:?}"));
    assert!(
        peak < MAX_RSS_KIB,
        "{args:?}: peak RSS {peak} KiB after {elapsed:?}"
    );
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "cannot make a FIFO at {}", path.display());
}

#[test]
fn files_that_are_not_libraries_are_refused_at_once() {
    if !root_or_skip("files_that_are_not_libraries_are_refused_at_once") {
        return;
    }
    let work = Workdir::new();
    let fifo = work.path().join("fifo");
    mkfifo(&fifo);
    let sparse = work.path().join("sparse");
    File::create(&sparse).unwrap().set_len(1 << 30).unwrap();
    let huge = work.path().join("huge");
    File::create(&huge).unwrap().set_len(3 << 30).unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let extra = format!("openssl:{}", path(&fifo));
    let cases: &[(&[&str], &str)] = &[
        (
            &["--binary", "/dev/zero"],
            "/dev/zero is a character device, not a regular file",
        ),
        (
            &["--binary", &path(&fifo)],
            "fifo is a FIFO, not a regular file",
        ),
        (
            &["--binary", &path(work.path())],
            "is a directory, not a regular file",
        ),
        (
            &["--binary", &path(&sparse)],
            "sparse is not a readable ELF file",
        ),
        (&["--binary", &path(&huge)], "over the 2 GiB limit"),
        (
            &["--extra-lib", &extra],
            "fifo is a FIFO, not a regular file",
        ),
    ];
    for (args, expect) in cases {
        assert_refused(args, expect);
    }
}

/// Who opens or reads one file, whoever does it, through fanotify, which names the
/// opener's PID (inotify does not: other tests' sniffers may look at every process).
struct OpenWatch {
    events: File,
}

impl OpenWatch {
    /// Watches `path`, and checks that the watch sees this test's own open of it.
    fn new(path: &Path) -> OpenWatch {
        let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        // SAFETY: fanotify_init takes flags only.
        let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_CLOEXEC) as u32) };
        assert!(
            fd >= 0,
            "fanotify_init: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just returned to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: c_path is a NUL-terminated string that outlives the call.
        let marked = unsafe {
            libc::fanotify_mark(
                fd.as_raw_fd(),
                libc::FAN_MARK_ADD,
                libc::FAN_OPEN | libc::FAN_ACCESS,
                libc::AT_FDCWD,
                c_path.as_ptr(),
            )
        };
        assert_eq!(
            marked,
            0,
            "fanotify_mark: {}",
            std::io::Error::last_os_error()
        );
        let mut watch = OpenWatch {
            events: File::from(fd),
        };
        drop(File::open(path).unwrap());
        assert!(
            watch.openers().contains(&(std::process::id() as i32)),
            "fanotify does not report opens of {}",
            path.display()
        );
        watch
    }

    /// The PIDs that opened or read the file since the last call.
    fn openers(&mut self) -> Vec<i32> {
        let mut pids = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.events.read(&mut buf) {
            let mut at = 0;
            // struct fanotify_event_metadata: event_len u32, vers u8, reserved u8,
            // metadata_len u16, mask u64, fd i32, pid i32.
            while at + 24 <= n {
                let word =
                    |o: usize| u32::from_ne_bytes(buf[at + o..at + o + 4].try_into().unwrap());
                let len = word(0) as usize;
                let (fd, pid) = (word(16) as i32, word(20) as i32);
                if fd >= 0 {
                    // SAFETY: each event carries a descriptor that is ours to close.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                pids.push(pid);
                if len < 24 {
                    break;
                }
                at += len;
            }
        }
        pids
    }
}

/// A root directory for the fixture client: its loader and libraries copied in at the
/// paths it was linked with, except libssl, whose copy lives at /ssl/libssl.so.3 and is
/// reached from its usual path through an absolute symlink.
fn client_root(work: &Workdir, client: &Path, name: &str) -> PathBuf {
    let root = work.path().join(name);
    let ldd = Command::new("ldd").arg(client).output().unwrap();
    assert!(ldd.status.success(), "ldd {} failed", client.display());
    for line in String::from_utf8(ldd.stdout).unwrap().lines() {
        // `libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)`, or the loader's
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) else {
            continue;
        };
        let inside = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(inside.parent().unwrap()).unwrap();
        if lib.ends_with("/libssl.so.3") {
            fs::create_dir_all(root.join("ssl")).unwrap();
            fs::copy(lib, root.join("ssl/libssl.so.3")).unwrap();
            symlink("/ssl/libssl.so.3", &inside).unwrap();
        } else {
            fs::copy(lib, &inside).unwrap();
        }
    }
    assert!(
        root.join("ssl/libssl.so.3").exists(),
        "the client does not link libssl.so.3"
    );
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(client, root.join("bin/client")).unwrap();
    root
}

/// A host file that a path inside another root can be made to lead to: a copy of
/// libssl, so that a sniffer which follows the path would trace it.
fn decoy(path: &Path) -> OpenWatch {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::copy("/usr/lib/x86_64-linux-gnu/libssl.so.3", path).unwrap();
    OpenWatch::new(path)
}

/// Lets a gated fixture client go, and waits for it to finish.
fn release(client: &mut Proc) {
    writeln!(client.child.stdin.take().unwrap()).unwrap();
    assert!(client.wait_timeout(Duration::from_secs(20)).success());
}

/// Starts the fixture client (gated) through `wrap`, which ends by exec'ing it: the
/// client keeps the wrapper's PID.
fn gated_client(wrap: &mut Command, port: u16, request: &str) -> Proc {
    let client = Proc::spawn(
        "client in its own root",
        wrap.arg(port.to_string())
            .arg(request)
            .env("SSLSNIFF_GATE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    wait_for_mapping(client.pid(), "/libssl.so.3");
    client
}

#[test]
fn pivot_root_process_is_traced_in_its_own_library_never_a_host_file() {
    if !root_or_skip("pivot_root_process_is_traced_in_its_own_library_never_a_host_file") {
        return;
    }
    let work = Workdir::new();
    let client = build_fixture(&work, "openssl_client.c", "client", &["-lssl", "-lcrypto"]);
    let root = client_root(&work, &client, "root");
    fs::create_dir(root.join("oldroot")).unwrap();
    let host_decoy = work.path().join("decoy/libssl.so.3");
    let mut watch = decoy(&host_decoy);
    // Mounted over /ssl once the client has mapped its libssl: /ssl/libssl.so.3 then is
    // an absolute symlink, which resolves against the root of whoever follows it.
    fs::create_dir(root.join("over")).unwrap();
    symlink(&host_decoy, root.join("over/libssl.so.3")).unwrap();
    let (_server, port) = https_server(&work);
    let (request, body) = page(&work, "pivot-root");

    let script = format!(
        "mount --bind {0} {0} && cd {0} && pivot_root . oldroot && cd / && \
         exec /bin/client \"$0\" \"$1\"",
        root.display()
    );
    let mut unshare = Command::new("unshare");
    unshare.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let mut client = gated_client(&mut unshare, port, &request);
    let pid = client.pid().to_string();
    // The host's mount, run inside the client's namespace with the host's libraries.
    let mounted = Command::new("nsenter")
        .args([
            "-t",
            &pid,
            "-m",
            "/oldroot/usr/bin/mount",
            "--bind",
            "/over",
            "/ssl",
        ])
        .env(
            "LD_LIBRARY_PATH",
            "/oldroot/lib/x86_64-linux-gnu:/oldroot/usr/lib/x86_64-linux-gnu",
        )
        .status()
        .unwrap();
    assert!(mounted.success(), "cannot cover /ssl in the client's root");
    let leads_out = fs::read_link(format!("/proc/{pid}/root/ssl/libssl.so.3")).unwrap();
    assert_eq!(leads_out, host_decoy, "the trap is not set");

    let sniffer = Sniffer::start(&["-p", &pid]);
    let sniffer_pid = sniffer.pid() as i32;
    release(&mut client);
    let out = sniffer.stop();
    assert!(
        !watch.openers().contains(&sniffer_pid),
        "the sniffer opened the host file:\n{}",
        out.stderr
    );
    assert!(
        out.traced(&format!("/proc/{pid}/root/ssl/libssl.so.3"), "openssl"),
        "{}",
        out.stderr
    );
    assert_both_directions(&out, &rows(&out.stdout), client.pid(), &request, &body);
}

#[test]
fn chrooted_process_is_traced_in_its_own_library_never_a_host_file() {
    if !root_or_skip("chrooted_process_is_traced_in_its_own_library_never_a_host_file") {
        return;
    }
    let work = Workdir::new();
    let client = build_fixture(&work, "openssl_client.c", "client", &["-lssl", "-lcrypto"]);
    let root = client_root(&work, &client, "chroot");
    // /proc/PID/maps names the library by its path from our root, which starts with the
    // root's own path: put there, inside the root, an absolute symlink to a host tree
    // that holds a decoy. Prefixing the maps path with /proc/PID/root leads to it.
    let host_tree = work.path().join("decoy-tree");
    let mut watch = decoy(&host_tree.join("chroot/ssl/libssl.so.3"));
    let trap = root.join(work.path().strip_prefix("/").unwrap());
    fs::create_dir_all(trap.parent().unwrap()).unwrap();
    symlink(&host_tree, &trap).unwrap();
    let (_server, port) = https_server(&work);

    for in_own_namespace in [false, true] {
        let (request, body) = page(&work, "chroot");
        let mut wrap = Command::new(if in_own_namespace {
            "unshare"
        } else {
            "chroot"
        });
        if in_own_namespace {
            wrap.args(["-m", "--propagation", "private", "chroot"]);
        }
        wrap.arg(&root).arg("/bin/client");
        let mut client = gated_client(&mut wrap, port, &request);
        let sniffer = Sniffer::start(&[]);
        let sniffer_pid = sniffer.pid() as i32;
        release(&mut client);
        let out = sniffer.stop();
        assert!(
            !watch.openers().contains(&sniffer_pid),
            "the sniffer opened the host file:\n{}",
            out.stderr
        );
        let own = format!("{}/ssl/libssl.so.3", root.display());
        assert!(out.traced(&own, "openssl"), "{}", out.stderr);
        assert_both_directions(&out, &rows(&out.stdout), client.pid(), &request, &body);
    }
}
