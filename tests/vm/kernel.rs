//! Debian's stock kernels, fetched from the Debian mirror the system's apt already uses:
//! `apt-get download` through a private apt configuration (its own sources list, lists
//! and cache under CACHE), then `dpkg -x`. The system's apt sources are never touched
//! and no kernel is installed.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kept between runs, outside the work tree: the private apt state of each suite, and
/// each fetched kernel under its package name and version.
const CACHE: &str = "/var/cache/sslsniff";

/// A kernel of the matrix: its version line ("6.1") and the Debian suite that ships it.
pub struct Kernel {
    pub series: &'static str,
    pub suite: &'static str,
}

/// A fetched kernel.
pub struct Fetched {
    pub package: String,
    pub version: String,
    pub vmlinuz: PathBuf,
}

/// The newest stock amd64 image of the kernel's line in its suite, from the cache or
/// fetched. Any failure (no mirror, no network, no such package) panics: a kernel that
/// cannot be had fails the test.
pub fn fetch(kernel: &Kernel) -> Fetched {
    let cache = Path::new(CACHE);
    fs::create_dir_all(cache.join("kernels")).expect("cannot create the kernel cache");
    // Another run of the tests may be fetching into the same cache.
    let _lock = lock(&cache.join("kernels.lock"));
    let apt = PrivateApt::new(&cache.join("apt").join(kernel.suite), kernel.suite);
    apt.update();
    let (package, version) = apt.newest_image(kernel.series);
    let dir = cache.join("kernels").join(format!("{package}_{version}"));
    if !dir.join("vmlinuz").exists() {
        unpack(&apt, &package, &version, &dir);
    }
    Fetched {
        vmlinuz: dir.join("vmlinuz"),
        package,
        version,
    }
}

/// Holds an exclusive lock on `path` until dropped.
fn lock(path: &Path) -> File {
    let file = File::create(path).expect("cannot create the kernel cache's lock");
    // SAFETY: the descriptor is open for the whole call; flock has no other effect.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "cannot lock {}", path.display());
    file
}

/// Runs a command to success and returns its stdout; panics with its stderr otherwise.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Debian mirror of the system's own apt configuration (its "Debian" archive, not
/// the security one).
fn debian_mirror() -> String {
    let targets = run(Command::new("apt-get").args([
        "indextargets",
        "--format",
        "$(REPO_URI) $(ORIGIN) $(LABEL)",
    ]));
    targets
        .lines()
        .find_map(|l| l.strip_suffix(" Debian Debian"))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "no Debian archive in the system's apt configuration (run apt-get update?):\n{targets}"
            )
        })
}

/// apt with its own sources list (one suite), lists and cache, and no preferences of
/// the system's.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(dir: &Path, suite: &str) -> PrivateApt {
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub)).expect("cannot create the private apt state");
        }
        let line = format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {suite} main\n",
            debian_mirror()
        );
        fs::write(dir.join("sources.list"), line).expect("cannot write the private sources list");
        PrivateApt {
            dir: dir.to_path_buf(),
        }
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        for (key, value) in [
            ("Dir::Etc::SourceList", d("sources.list")),
            ("Dir::Etc::SourceParts", "/dev/null".into()),
            ("Dir::Etc::Preferences", "/dev/null".into()),
            ("Dir::Etc::PreferencesParts", "/dev/null".into()),
            ("Dir::State::Lists", d("lists")),
            ("Dir::Cache", d("cache")),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd
    }

    fn update(&self) {
        run(self.cmd("apt-get").args(["update", "-qq"]));
    }

    /// The package and version of the newest `linux-image-SERIES.*-amd64` (the stock
    /// flavour: not cloud, not rt), resolved now rather than pinned, since the mirror
    /// drops old ABI numbers.
    fn newest_image(&self, series: &str) -> (String, String) {
        let prefix = format!("linux-image-{series}.");
        let names = run(self.cmd("apt-cache").args(["pkgnames", &prefix]));
        let stock: Vec<&str> = names
            .lines()
            .filter(|n| n.ends_with("-amd64") && !n.contains("-cloud-") && !n.contains("-rt-"))
            .collect();
        assert!(
            !stock.is_empty(),
            "no {prefix}*-amd64 in the suite:\n{names}"
        );
        let table = run(self.cmd("apt-cache").arg("madison").args(&stock));
        let mut newest: Option<(String, String)> = None;
        for line in table.lines() {
            let mut fields = line.split('|').map(str::trim);
            let (Some(name), Some(version)) = (fields.next(), fields.next()) else {
                continue;
            };
            if newest.as_ref().is_none_or(|(_, v)| newer(version, v)) {
                newest = Some((name.to_string(), version.to_string()));
            }
        }
        newest.unwrap_or_else(|| panic!("apt-cache madison listed nothing:\n{table}"))
    }
}

fn newer(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .expect("dpkg is installed")
        .success()
}

/// Downloads the package, unpacks it, and keeps only its vmlinuz and config (to look
/// up what the kernel was built with) in `dir`: the tests need no module.
fn unpack(apt: &PrivateApt, package: &str, version: &str, dir: &Path) {
    let parent = dir.parent().unwrap();
    let work = tempfile::Builder::new()
        .prefix("fetching-")
        .tempdir_in(parent)
        .expect("cannot make a download directory");
    run(apt
        .cmd("apt-get")
        .args(["download", "-qq", &format!("{package}={version}")])
        .current_dir(work.path()));
    let deb = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("apt-get download left no .deb for {package}"));
    let root = work.path().join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
    let kept = work.path().join("kept");
    fs::create_dir(&kept).unwrap();
    for (prefix, name) in [("vmlinuz-", "vmlinuz"), ("config-", "config")] {
        let found = fs::read_dir(root.join("boot"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("{package} has no boot/{prefix}*"));
        fs::copy(found, kept.join(name)).unwrap();
    }
    fs::rename(&kept, dir).expect("cannot move the kernel into the cache");
}
