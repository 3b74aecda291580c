//! The VM's root file system: an uncompressed newc cpio with a static busybox and its
//! applet links, host programs with every library `ldd` lists (same paths, symlinks
//! kept, the host's merged-/usr layout), an ld.so.cache, and files written for the run.

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::kernel::run;

pub struct Initramfs {
    root: TempDir,
    copied: HashSet<PathBuf>,
}

/// `path` (absolute) relative to the root.
fn rel(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

impl Initramfs {
    /// A root with the host's top-level layout, the mount points, a console device and
    /// Debian's static busybox with a link for each applet.
    pub fn new() -> Initramfs {
        let root = tempfile::Builder::new()
            .prefix("sslsniff-initramfs")
            .tempdir()
            .unwrap();
        let mut fs = Initramfs {
            root,
            copied: HashSet::new(),
        };
        for top in ["/bin", "/sbin", "/lib", "/lib64", "/usr/bin", "/usr/sbin"] {
            fs.copy(Path::new(top));
        }
        for dir in [
            "proc", "sys", "dev", "tmp", "run", "root", "srv", "out", "etc",
        ] {
            fs::create_dir_all(fs.root.path().join(dir)).unwrap();
        }
        // The kernel opens it for init's stdin, stdout and stderr before anything runs.
        run(Command::new("mknod")
            .arg(fs.root.path().join("dev/console"))
            .args(["c", "5", "1"]));
        let busybox = Path::new("/usr/bin/busybox");
        fs.program(busybox);
        let applets = run(Command::new(busybox).arg("--list-full"));
        for applet in applets.lines() {
            let dest = fs.dest(&Path::new("/").join(applet));
            if !dest.exists() {
                symlink(busybox, dest).unwrap();
            }
        }
        for (path, text) in [
            ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("/etc/group", "root:x:0:\n"),
            ("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
        ] {
            fs.file(path, text.as_bytes(), 0o644);
        }
        fs
    }

    /// Where `path` of the VM lands in the root: under its parent as the host lays it
    /// out (a file in /lib lands in usr/lib), so nothing is written through a link.
    fn dest(&mut self, path: &Path) -> PathBuf {
        let parent = path.parent().expect("an absolute path below /");
        let real = if parent.exists() {
            self.copy(parent);
            fs::canonicalize(parent).unwrap()
        } else {
            fs::create_dir_all(self.root.path().join(rel(parent))).unwrap();
            parent.to_path_buf()
        };
        self.root
            .path()
            .join(rel(&real))
            .join(path.file_name().unwrap())
    }

    /// Copies a host path as it is: a directory as an empty one, a symlink as the same
    /// link plus what it points to, a file with its mode. What is copied last wins, so
    /// a real program replaces a busybox applet of the same name.
    pub fn copy(&mut self, path: &Path) {
        if path == Path::new("/") || !self.copied.insert(path.to_path_buf()) {
            return;
        }
        let dest = self.dest(path);
        let meta = fs::symlink_metadata(path)
            .unwrap_or_else(|e| panic!("cannot copy {} into the VM: {e}", path.display()));
        if meta.is_dir() {
            fs::create_dir_all(&dest).unwrap();
            return;
        }
        let _ = fs::remove_file(&dest);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(path).unwrap();
            symlink(&target, &dest).unwrap();
            let target = fs::canonicalize(path.parent().unwrap())
                .unwrap()
                .join(target);
            let parent = fs::canonicalize(target.parent().unwrap()).unwrap();
            self.copy(&parent.join(target.file_name().unwrap()));
        } else {
            fs::copy(path, &dest).unwrap_or_else(|e| panic!("cannot copy {}: {e}", path.display()));
        }
    }

    /// Copies a directory and everything below it.
    pub fn tree(&mut self, dir: &Path) {
        self.copy(dir);
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                self.tree(&entry.path());
            } else {
                self.copy(&entry.path());
            }
        }
    }

    /// Copies a program (or shared object) and every library `ldd` lists for it.
    pub fn program(&mut self, path: &Path) {
        self.copy(path);
        self.libraries(path);
    }

    /// Puts a program of the host at `at` in the VM, with its libraries.
    pub fn install(&mut self, program: &Path, at: &str) {
        let bytes =
            fs::read(program).unwrap_or_else(|e| panic!("cannot read {}: {e}", program.display()));
        self.file(at, &bytes, 0o755);
        self.libraries(program);
    }

    fn libraries(&mut self, path: &Path) {
        let ldd = Command::new("ldd")
            .arg(path)
            .stderr(Stdio::null())
            .output()
            .expect("ldd is installed");
        if !ldd.status.success() {
            return; // static: "not a dynamic executable"
        }
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            assert!(
                !line.contains("not found"),
                "{}: {}",
                path.display(),
                line.trim()
            );
            // "libz.so.1 => /lib/.../libz.so.1 (0x..)", "/lib64/ld-linux-x86-64.so.2 (0x..)";
            // the vDSO has no file.
            let lib = line.rsplit("=> ").next().unwrap().trim();
            let lib = lib.split(" (").next().unwrap();
            if lib.starts_with('/') {
                self.copy(Path::new(lib));
            }
        }
    }

    /// Debian's python3 with the standard modules that importing `modules` loads (and
    /// their compiled forms, so that nothing is compiled under emulation).
    pub fn python(&mut self, modules: &[&str]) {
        let python = Path::new("/usr/bin/python3");
        self.program(python);
        let script = format!(
            "import importlib.util, sys, {}\n\
             for m in list(sys.modules.values()):\n\
             \x20   f = getattr(m, '__file__', None)\n\
             \x20   if f:\n\
             \x20       print(f)\n\
             \x20       if f.endswith('.py'): print(importlib.util.cache_from_source(f))\n",
            modules.join(", ")
        );
        let files = run(Command::new(python).args(["-c", &script]));
        for file in files.lines().map(Path::new).filter(|f| f.exists()) {
            if file.extension().is_some_and(|e| e == "so") {
                self.program(file);
            } else {
                self.copy(file);
            }
        }
    }

    /// Writes a file of the run at `path` in the VM.
    pub fn file(&mut self, path: &str, contents: &[u8], mode: u32) {
        let dest = self.dest(Path::new(path));
        fs::write(&dest, contents).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Makes the ld.so.cache and writes the archive; returns its size in bytes.
    pub fn write(mut self, out: &Path) -> u64 {
        self.copy(Path::new("/etc/ld.so.conf"));
        self.tree(Path::new("/etc/ld.so.conf.d"));
        run(Command::new("ldconfig").arg("-r").arg(self.root.path()));
        let archive = File::create(out).expect("cannot create the initramfs");
        run(Command::new("sh")
            .args([
                "-c",
                "find . -mindepth 1 -print0 | cpio --null --quiet -o -H newc -R 0:0",
            ])
            .current_dir(self.root.path())
            .stdout(archive));
        fs::metadata(out).unwrap().len()
    }
}
