//! Container identity: every event says its cgroup, and the container a runtime named
//! it after; `--cgroup` keeps only one cgroup and its descendants. The cgroups are real,
//! made for each test under the machine's cgroup v2 hierarchy and named as docker names
//! a container's (`docker-<id>.scope`), with a hostile name above it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use sslsniff::procfs::CgroupHierarchy;

/// A container's cgroup made for a test, `<parent>/docker-<id>.scope`, removed when
/// dropped: declare it before the processes moved into it, so that they are gone first.
struct ContainerCgroup {
    /// The parent's directory, then the container's.
    dirs: [PathBuf; 2],
    /// The parent's and the container's paths as events show them.
    parent: String,
    path: String,
    id: String,
}

impl ContainerCgroup {
    fn new(name: &str) -> ContainerCgroup {
        let hierarchy = CgroupHierarchy::open().expect("this machine mounts cgroup v2");
        let mark = marker(name);
        // 64 hex digits, unique to the test.
        let id = format!("{:032x}{:032x}", fnv1a(&mark), fnv1a(&format!("{mark}.")));
        // Named by whoever makes it: terminal escapes, to be shown escaped, and a word
        // that looks like another field (the kernel refuses line breaks).
        let parent = format!("/{mark}-\x1b]0;pwn\x07 container=0");
        let path = format!("{parent}/docker-{id}.scope");
        let mount = hierarchy.mount();
        let dirs = [mount.join(&parent[1..]), mount.join(&path[1..])];
        fs::create_dir(&dirs[0]).expect("cannot make a cgroup under the v2 hierarchy");
        fs::create_dir(&dirs[1]).unwrap();
        ContainerCgroup {
            dirs,
            parent,
            path,
            id,
        }
    }

    /// Moves process `pid` into the container's cgroup.
    fn enter(&self, pid: u32) {
        fs::write(self.dirs[1].join("cgroup.procs"), pid.to_string()).unwrap();
    }

    /// The id the kernel gives the container's cgroup: its directory's inode.
    fn cgroup_id(&self) -> u64 {
        fs::metadata(&self.dirs[1]).unwrap().ino()
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // A process killed a moment ago may take a while to leave its cgroup.
        for dir in self.dirs.iter().rev() {
            let start = Instant::now();
            while fs::remove_dir(dir).is_err() && start.elapsed() < Duration::from_secs(5) {
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// 128-bit FNV-1a of `text`: an id as unique as the marker it is made from.
fn fnv1a(text: &str) -> u128 {
    text.bytes()
        .fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d, |h, b| {
            (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
        })
}

/// Lets a gated client go, and waits for it to finish.
fn release(client: &mut Proc) {
    writeln!(client.child.stdin.take().unwrap()).unwrap();
    assert!(client.wait_timeout(Duration::from_secs(20)).success());
}

#[test]
fn a_process_in_a_container_s_cgroup_carries_its_container() {
    if !root_or_skip("a_process_in_a_container_s_cgroup_carries_its_container") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = python_https_server(&work);
    let path = marker("container");
    work.file(&path, b"container body\n");
    let cgroup = ContainerCgroup::new("container");
    let mut client = Proc::spawn(
        "python3 in a container",
        &mut python_client(port, &http_get(&path), true),
    );
    cgroup.enter(client.pid());
    let pcap = work.path().join("container.pcapng");

    let json = Sniffer::start(&[
        "--format",
        "json",
        "--pcap",
        pcap.to_str().unwrap(),
        "-c",
        "python3",
    ]);
    let text = Sniffer::start(&["-x", "-c", "python3"]);
    release(&mut client);
    let (json, text) = (json.stop(), text.stop());

    assert_json_container(&json, &cgroup, client.pid());
    assert_text_container(&text, &cgroup, client.pid(), &path);
    assert_pcap_container(&pcap, &cgroup, client.pid());
}

/// The JSON fields of the client's events, and no other process in its cgroup.
fn assert_json_container(json: &Output, cgroup: &ContainerCgroup, pid: u32) {
    let events = json_events(&json.stdout);
    let mine: Vec<_> = events.iter().filter(|e| e["pid"] == pid).collect();
    assert!(
        mine.len() >= 2,
        "the request and the response:\n{}",
        json.stdout
    );
    for e in mine {
        assert_eq!(e["container.id"], cgroup.id.as_str(), "{e}");
        assert_eq!(e["cgroup"], cgroup.path.as_str(), "{e}");
        assert_eq!(e["cgroup_id"], cgroup.cgroup_id(), "{e}");
    }
    assert!(!json.stdout_bytes.contains(&0x1b), "a raw ESC in the JSON");
    let mut others = events.iter().filter(|e| e["pid"] != pid);
    assert!(others.all(|e| e["cgroup"] != cgroup.path.as_str()));
}

/// -x: the container's short id after UID and TID, on the client's rows only.
fn assert_text_container(text: &Output, cgroup: &ContainerCgroup, pid: u32, path: &str) {
    let rows = rows(&text.stdout);
    let short = &cgroup.id[..12];
    let (mine, others): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| r.pid == pid);
    assert!(
        mine.iter().any(|r| r.data.contains(path)),
        "{}",
        text.stdout
    );
    assert!(
        mine.iter().all(|r| r.columns[7] == short),
        "{}",
        text.stdout
    );
    assert!(
        others.iter().all(|r| r.columns[7] != short),
        "{}",
        text.stdout
    );
}

/// The capture's comments of the client's packets end with the container and the path,
/// escaped.
fn assert_pcap_container(pcap: &Path, cgroup: &ContainerCgroup, pid: u32) {
    let comments = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "http", "-T", "fields", "-e", "frame.comment"])
        .output()
        .expect("tshark is installed");
    assert!(comments.status.success());
    let shown = String::from_utf8_lossy(&comments.stdout);
    let escaped = cgroup
        .path
        .replace('\x1b', "\\x1b")
        .replace('\x07', "\\x07");
    let expected = format!("container={} cgroup={escaped}", cgroup.id);
    let client = format!("pid={pid} ");
    let of_client: Vec<&str> = shown.lines().filter(|l| l.starts_with(&client)).collect();
    assert!(
        of_client.len() >= 2,
        "the request and the response:\n{shown}"
    );
    assert!(of_client.iter().all(|l| l.ends_with(&expected)), "{shown}");
    assert!(
        !comments.stdout.contains(&0x1b),
        "a raw ESC in the capture's comments"
    );
}

#[test]
fn cgroup_filter_keeps_only_that_cgroup_and_its_descendants() {
    if !root_or_skip("cgroup_filter_keeps_only_that_cgroup_and_its_descendants") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = https_server(&work);
    let (inside, outside) = (marker("cgroup-in"), marker("cgroup-out"));
    let cgroup = ContainerCgroup::new("filter");
    let mut a = Proc::spawn(
        "python3 inside",
        &mut python_client(port, &http_get(&inside), true),
    );
    let mut b = Proc::spawn(
        "python3 outside",
        &mut python_client(port, &http_get(&outside), true),
    );
    cgroup.enter(a.pid());

    // The parent, as events show it: the container's cgroup is its child. And the same
    // by its directory under the mount.
    let by_path = Sniffer::start(&["--cgroup", &cgroup.parent]);
    let dir = cgroup.dirs[0].to_str().unwrap().to_string();
    let by_dir = Sniffer::start(&["--format", "json", "--cgroup", &dir]);
    release(&mut a);
    release(&mut b);
    let (by_path, by_dir) = (by_path.stop(), by_dir.stop());

    assert!(
        by_path.stdout.contains(&inside),
        "--cgroup lost its process:\n{}",
        by_path.stdout
    );
    assert!(
        !by_path.stdout.contains(&outside),
        "--cgroup let another through:\n{}",
        by_path.stdout
    );
    let events = json_events(&by_dir.stdout);
    assert!(events
        .iter()
        .any(|e| e["data"].as_str().unwrap_or("").contains(&inside)));
    assert!(
        events.iter().all(|e| e["cgroup"] == cgroup.path.as_str()),
        "{}",
        by_dir.stdout
    );
}

#[test]
fn a_cgroup_that_does_not_exist_is_one_line_of_error() {
    if !root_or_skip("a_cgroup_that_does_not_exist_is_one_line_of_error") {
        return;
    }
    let mount = CgroupHierarchy::open()
        .expect("cgroup v2")
        .mount()
        .to_path_buf();
    let absolute = mount.join("sslsniff-no-such-cgroup");
    for path in ["/sslsniff-no-such-cgroup", absolute.to_str().unwrap()] {
        let out = Command::new(SNIFFER)
            .args(["--cgroup", path])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("--cgroup"), "{stderr}");
    }
}
