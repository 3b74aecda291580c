//! Every read of `/proc`: the processes, what each maps and runs, its name, its mount
//! namespace, our own capabilities, and the cgroup v2 hierarchy (found through our
//! mountinfo). The kernel writes these files, but the paths and names in them are chosen
//! by the traced side: they stay bytes, for whoever prints them to escape, and no path
//! read here is ever opened again by name (a file a process maps is opened through
//! `map_files`, the very inode it maps; a cgroup through its id).

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::statfs::{fstatfs, CGROUP2_SUPER_MAGIC};

/// A file as the kernel names it: the superblock's device in the kernel's encoding
/// (`MKDEV`: major << 20 | minor, which is what BPF reads from `s_dev` and what maps
/// lines show) and the inode. The one name for a file everywhere in sslsniff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// From stat(2), whose device encoding differs from the kernel's.
    pub fn of(meta: &Metadata) -> FileId {
        let dev = meta.dev();
        FileId::from_major_minor(libc::major(dev) as u64, libc::minor(dev) as u64, meta.ino())
    }

    pub fn from_major_minor(major: u64, minor: u64, ino: u64) -> FileId {
        FileId {
            dev: (major << 20) | minor,
            ino,
        }
    }

    /// The file `path` names now, without opening it.
    pub fn of_path(path: &Path) -> Option<FileId> {
        path.metadata().ok().map(|m| FileId::of(&m))
    }
}

/// The process of `-p`, or every process on the machine.
pub fn pids(only: Option<u32>) -> Vec<u32> {
    match only {
        Some(pid) => vec![pid],
        None => fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The threads of a process.
pub fn tasks(pid: u32) -> Vec<u32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Where a process's executable opens: the very file it runs, whatever its root.
pub fn exe(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/exe"))
}

/// The executable's path as the kernel writes it (see `shown_path`).
pub fn exe_link(pid: u32) -> Option<PathBuf> {
    fs::read_link(exe(pid)).ok()
}

/// The file a process runs.
pub fn exe_id(pid: u32) -> Option<FileId> {
    FileId::of_path(&exe(pid))
}

/// Where the file mapped at `start..end` of a process opens: the mapped inode itself.
pub fn map_file(pid: u32, start: u64, end: u64) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
}

/// The command name, without its newline.
pub fn comm(pid: u32) -> Option<Vec<u8>> {
    let mut name = fs::read(format!("/proc/{pid}/comm")).ok()?;
    if name.last() == Some(&b'\n') {
        name.pop();
    }
    Some(name)
}

/// The `/proc/PID/maps` text of a process.
pub fn maps(pid: u32) -> Option<Vec<u8>> {
    fs::read(format!("/proc/{pid}/maps")).ok()
}

/// One file mapping of a maps text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping<'a> {
    pub start: u64,
    pub end: u64,
    pub file: FileId,
    /// The path as the kernel wrote it, " (deleted)" taken off.
    pub path: &'a [u8],
    /// The file was unlinked since it was mapped.
    pub deleted: bool,
}

impl Mapping<'_> {
    pub fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(self.path))
    }
}

/// The file mappings of a maps text, in order; anonymous and special mappings are left
/// out. Paths are bytes: file names need not be UTF-8.
pub fn mappings(maps: &[u8]) -> impl Iterator<Item = Mapping<'_>> {
    maps.split(|&b| b == b'\n').filter_map(mapping)
}

/// `START-END PERMS OFFSET MAJOR:MINOR INODE   PATH`: the path is the rest of the line.
fn mapping(line: &[u8]) -> Option<Mapping<'_>> {
    let mut fields = line.splitn(6, |&b| b == b' ');
    let (range, _perms, _offset) = (fields.next()?, fields.next()?, fields.next()?);
    let (dev, ino, path) = (fields.next()?, fields.next()?, fields.next()?);
    let path = path.trim_ascii_start();
    if !path.starts_with(b"/") {
        return None;
    }
    let hex = |digits: &[u8]| u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok();
    let dec = |digits: &[u8]| std::str::from_utf8(digits).ok()?.parse().ok();
    let (start, end) = split_at_byte(range, b'-')?;
    let (major, minor) = split_at_byte(dev, b':')?;
    let (path, deleted) = match path.strip_suffix(b" (deleted)") {
        Some(path) => (path, true),
        None => (path, false),
    };
    Some(Mapping {
        start: hex(start)?,
        end: hex(end)?,
        file: FileId::from_major_minor(hex(major)?, hex(minor)?, dec(ino)?),
        path,
        deleted,
    })
}

fn split_at_byte(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == sep)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// How messages name a file that process `pid` names `path` in its maps or exe link.
/// The kernel writes those paths from our root through the process's mounts: in our own
/// mount namespace the path is ours as it stands (a chrooted process's included); in
/// another it starts at that namespace's root, which is usually the process's root.
pub fn shown_path(pid: u32, path: &Path) -> PathBuf {
    let ns = |proc: &str| FileId::of_path(Path::new(&format!("/proc/{proc}/ns/mnt")));
    if ns(&pid.to_string()).is_some_and(|id| Some(id) == ns("self")) {
        return path.to_path_buf();
    }
    let mut shown = std::ffi::OsString::from(format!("/proc/{pid}/root"));
    shown.push(path.as_os_str());
    PathBuf::from(shown)
}

/// Whether we hold CAP_SYS_ADMIN, which creating uprobes takes.
pub fn has_cap_sys_admin() -> Result<bool> {
    const CAP_SYS_ADMIN: u32 = 21;
    let status =
        fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    Ok(effective & (1 << CAP_SYS_ADMIN) != 0)
}

/// PF_KTHREAD in /proc/PID/stat's flags: a kernel thread runs no user code.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Refuses a PID that cannot make TLS calls, with the reason.
pub fn check(pid: u32) -> Result<()> {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        bail!("no process with PID {pid}");
    };
    // The command name in parentheses may contain anything, ')' too: fields start after
    // the last one.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let state = fields.first().copied().unwrap_or("?");
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    if state == "Z" || state == "X" {
        bail!("process {pid} has exited (a zombie waiting for its parent): it makes no more calls");
    }
    if flags & PF_KTHREAD != 0 {
        bail!("process {pid} is a kernel thread: it runs no TLS library");
    }
    Ok(())
}

/// A process that can be asked, without blocking, whether it has exited.
pub struct Watch {
    pidfd: OwnedFd,
}

impl Watch {
    pub fn new(pid: u32) -> Result<Watch> {
        // SAFETY: pidfd_open takes two integers; a non-negative result is a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            bail!(
                "cannot watch process {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: the kernel just gave us this fd.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Watch { pidfd })
    }

    /// A pidfd becomes readable when its process exits.
    pub fn exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }
}

/// The cgroup v2 hierarchy as our mount namespace has it mounted (at /sys/fs/cgroup, or
/// /sys/fs/cgroup/unified beside v1 on a hybrid machine): its mount point, and its root
/// directory open, which the kernel needs to find a cgroup by id.
#[derive(Debug)]
pub struct CgroupHierarchy {
    mount: PathBuf,
    root: OwnedFd,
}

/// The kernel's file handle type for kernfs (cgroup2) nodes, whose 8 bytes are the id.
const FILEID_KERNFS: i32 = 0xfe;
/// A cgroup path is this long at most (PATH_MAX).
const MAX_CGROUP_PATH: usize = 4096;

impl CgroupHierarchy {
    /// The first cgroup2 mount of /proc/self/mountinfo, or None (a machine with only
    /// cgroup v1).
    pub fn open() -> Option<CgroupHierarchy> {
        let info = fs::read("/proc/self/mountinfo").ok()?;
        let mount = info.split(|&b| b == b'\n').find_map(cgroup2_mount)?;
        let root = open_directory(&mount).ok()?;
        is_cgroup2(&root).then_some(CgroupHierarchy { mount, root })
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The path, from the hierarchy's root, of the cgroup whose id is `id`: the kernel
    /// finds the directory by its inode (a kernfs file handle), so no tree is walked.
    /// None when there is no such cgroup any more, or it is outside our mount.
    pub fn path_of(&self, id: u64) -> Option<Vec<u8>> {
        #[repr(C)]
        struct KernfsHandle {
            handle_bytes: u32,
            handle_type: i32,
            id: u64,
        }
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: the handle is a struct file_handle with 8 bytes of f_handle, alive for
        // the call; a non-negative result is a new fd, ours.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                self.root.as_raw_fd(),
                &mut handle,
                flags,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just gave us this fd.
        let dir = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let path = fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
        // Removed since it was opened: its name is not known for sure any more.
        if path.as_os_str().as_bytes().ends_with(b" (deleted)") {
            return None;
        }
        let relative = path.strip_prefix(&self.mount).ok()?.as_os_str().as_bytes();
        (relative.len() < MAX_CGROUP_PATH).then(|| [b"/", relative].concat())
    }

    /// The directory of the cgroup `path` names: a path from the hierarchy's root (as
    /// events show it), or a directory under the mount point.
    pub fn open_cgroup(&self, path: &Path) -> Result<OwnedFd> {
        let dir = if path.starts_with(&self.mount) {
            path.to_path_buf()
        } else {
            self.mount.join(path.strip_prefix("/").unwrap_or(path))
        };
        let fd = open_directory(&dir).with_context(|| {
            format!(
                "no cgroup {} under {}",
                path.display(),
                self.mount.display()
            )
        })?;
        if !is_cgroup2(&fd) {
            bail!("{} is not a cgroup v2 directory", dir.display());
        }
        Ok(fd)
    }
}

/// The mount point of a mountinfo line whose filesystem type is cgroup2.
fn cgroup2_mount(line: &[u8]) -> Option<PathBuf> {
    let text = std::str::from_utf8(line).ok()?;
    let (mount, fs) = text.split_once(" - ")?;
    if fs.split(' ').next() != Some("cgroup2") {
        return None;
    }
    let point = mount.split(' ').nth(4)?;
    Some(PathBuf::from(OsStr::from_bytes(&unescape_octal(
        point.as_bytes(),
    ))))
}

/// mountinfo's escapes (`\040` for a space, and so on) undone.
fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let digits = s
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (s[i], digits) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn open_directory(path: &Path) -> Result<OwnedFd> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(OwnedFd::from(file))
}

fn is_cgroup2(dir: &OwnedFd) -> bool {
    fstatfs(dir).is_ok_and(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn reads_file_mappings_with_their_identity() {
        let maps = b"7f00-7f01 r--p 00000000 fd:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
            7f02-7f03 rw-p 00000000 00:00 0 \n\
            00400000-00401000 r-xp 00000000 00:2a 9                  /opt/app/lib with space/libssl.so.3\n\
            7f04-7f05 r-xp 00000000 fd:01 7 /tmp/libssl.so.3 (deleted)\n\
            7f05-7f06 r-xp 00000000 fd:01 8 /tmp/\xff\\012/libssl.so.3\n\
            7f06-zz r-xp 00000000 fd:01 8 /tmp/bad-range\n\
            7ffd-7ffe rw-p 00000000 00:00 0 [stack]\n";
        let m = |start, end, file, path: &'static [u8], deleted| Mapping {
            start,
            end,
            file,
            path,
            deleted,
        };
        let id = FileId::from_major_minor;
        assert_eq!(
            mappings(maps).collect::<Vec<_>>(),
            [
                m(
                    0x7f00,
                    0x7f01,
                    id(0xfd, 1, 123),
                    b"/usr/lib/x86_64-linux-gnu/libssl.so.3",
                    false
                ),
                m(
                    0x400000,
                    0x401000,
                    id(0, 0x2a, 9),
                    b"/opt/app/lib with space/libssl.so.3",
                    false
                ),
                m(0x7f04, 0x7f05, id(0xfd, 1, 7), b"/tmp/libssl.so.3", true),
                m(
                    0x7f05,
                    0x7f06,
                    id(0xfd, 1, 8),
                    b"/tmp/\xff\\012/libssl.so.3",
                    false
                ),
            ]
        );
    }

    #[test]
    fn stat_and_kernel_device_numbers_agree() {
        let id = exe_id(std::process::id()).unwrap();
        let maps = maps(std::process::id()).unwrap();
        assert!(
            mappings(&maps).any(|m| m.file == id),
            "{id:?} not in our maps"
        );
    }

    #[test]
    fn shows_paths_of_other_mount_namespaces_under_the_process_root() {
        let own = Path::new("/lib/libssl.so.3");
        assert_eq!(shown_path(std::process::id(), own), own);
        // No such process: no namespace to compare, so the path is shown as another root's.
        let other = Path::new(OsStr::from_bytes(b"/lib/\xff"));
        assert_eq!(
            shown_path(u32::MAX, other).as_os_str().as_bytes(),
            [format!("/proc/{}/root/lib/", u32::MAX).as_bytes(), b"\xff"].concat()
        );
    }

    #[test]
    fn finds_the_cgroup2_mount_among_mountinfo_lines() {
        let unified =
            b"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(unified),
            Some("/sys/fs/cgroup/unified".into())
        );
        let v1 = b"32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        assert_eq!(cgroup2_mount(v1), None);
        let spaced = b"41 31 0:38 / /mnt/a\\040b\\134 rw - cgroup2 none rw";
        assert_eq!(cgroup2_mount(spaced), Some("/mnt/a b\\".into()));
        assert_eq!(cgroup2_mount(b"garbage - cgroup2"), None);
    }

    #[test]
    fn a_child_is_watched_until_it_exits() {
        let mut child = Command::new("sleep").arg("0.2").spawn().unwrap();
        check(child.id()).unwrap();
        let watch = Watch::new(child.id()).unwrap();
        assert!(!watch.exited());
        child.wait().unwrap();
        assert!(watch.exited());
    }

    #[test]
    fn zombies_and_kernel_threads_are_refused_with_the_reason() {
        let child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for: a zombie until the test ends.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let err = check(pid).unwrap_err().to_string();
        assert!(err.contains("has exited"), "{err}");
        drop(child);
        // kthreadd is PID 2 on every Linux.
        let err = check(2).unwrap_err().to_string();
        assert!(err.contains("kernel thread"), "{err}");
        assert!(check(4_194_305).is_err());
    }
}
