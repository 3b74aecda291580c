//! Which cgroup, and which container, each event came from. The kernel gives the calling
//! thread's cgroup id (its directory's inode in the cgroup v2 hierarchy); its path is
//! looked up once and kept, and a container id is read from the path where a container
//! runtime named the cgroup after its container.

use std::collections::HashMap;
use std::rc::Rc;

use crate::procfs::CgroupHierarchy;

/// A cgroup, as the outputs show it.
#[derive(Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// Its path from the hierarchy's root (`/docker/<id>`): bytes as the kernel has
    /// them, named by whoever made the cgroup, so hostile; outputs escape it.
    pub path: Vec<u8>,
    /// The container id the path names (64 lowercase hex digits), if any.
    pub container_id: Option<String>,
}

impl Cgroup {
    pub fn new(path: Vec<u8>) -> Cgroup {
        let container_id = container_id(&path);
        Cgroup { path, container_id }
    }
}

/// Cgroups known by id: a cgroup's id is never reused, so neither a path found nor one
/// that could not be (the cgroup was removed first) ever needs looking up again.
const MAX_CGROUPS: usize = 4096;

pub struct Cgroups {
    hierarchy: Option<CgroupHierarchy>,
    known: HashMap<u64, Option<Rc<Cgroup>>>,
    /// The last one asked for: consecutive events mostly share their cgroup.
    last: Option<(u64, Option<Rc<Cgroup>>)>,
}

impl Default for Cgroups {
    fn default() -> Cgroups {
        Cgroups::new()
    }
}

impl Cgroups {
    /// Paths from this machine's cgroup v2 hierarchy; none when it has none mounted.
    pub fn new() -> Cgroups {
        Cgroups::of(CgroupHierarchy::open())
    }

    pub fn of(hierarchy: Option<CgroupHierarchy>) -> Cgroups {
        Cgroups {
            hierarchy,
            known: HashMap::new(),
            last: None,
        }
    }

    /// The cgroup whose id is `id`, or None when its path is not known.
    pub fn get(&mut self, id: u64) -> Option<Rc<Cgroup>> {
        if let Some((last, cgroup)) = &self.last {
            if *last == id {
                return cgroup.clone();
            }
        }
        let hierarchy = self.hierarchy.as_ref()?;
        // Past the bound it starts over: memory stays bounded whatever the machine
        // makes, at the cost of looking the cgroups in use up again.
        if self.known.len() >= MAX_CGROUPS && !self.known.contains_key(&id) {
            self.known.clear();
        }
        let cgroup = self
            .known
            .entry(id)
            .or_insert_with(|| hierarchy.path_of(id).map(|p| Rc::new(Cgroup::new(p))))
            .clone();
        self.last = Some((id, cgroup.clone()));
        cgroup
    }
}

/// Runtimes that name a container's cgroup `<runtime>-<id>` (`.scope` under systemd):
/// docker, containerd's CRI plugin (Kubernetes), cri-o, podman.
const RUNTIME_PREFIXES: [&[u8]; 4] = [b"docker-", b"cri-containerd-", b"crio-", b"libpod-"];
/// containerd's own systemd naming: `<slice>:cri-containerd:<id>`.
const RUNTIME_NAMES: [&[u8]; 3] = [b"docker", b"cri-containerd", b"crio"];

/// The container id a cgroup path names: the deepest component that is a container id
/// (`/docker/<id>`, `/kubepods/burstable/pod<uid>/<id>`), a runtime's name for one
/// (`docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`), or containerd's `...slice:cri-containerd:<id>`. The deepest,
/// so that a container inside a container is named by the inner one. The monitors'
/// cgroups (`crio-conmon-<id>`, `libpod-conmon-<id>`) are not containers.
pub fn container_id(path: &[u8]) -> Option<String> {
    path.rsplit(|&b| b == b'/').find_map(component_id)
}

fn component_id(name: &[u8]) -> Option<String> {
    let name = name.strip_suffix(b".scope").unwrap_or(name);
    let id = if is_id(name) {
        name
    } else if let Some(id) = RUNTIME_PREFIXES.iter().find_map(|p| name.strip_prefix(*p)) {
        id
    } else {
        let mut fields = name.rsplit(|&b| b == b':');
        let (id, runtime) = (fields.next()?, fields.next()?);
        RUNTIME_NAMES.contains(&runtime).then_some(id)?
    };
    is_id(id).then(|| String::from_utf8_lossy(id).into_owned())
}

/// 64 lowercase hex digits: how every runtime here writes a container id.
fn is_id(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1e9f8d7c6b5a4938271605f4e3d2c1b0a99887766554433221100ffeeddccb";

    #[test]
    fn container_ids_are_read_from_every_runtime_naming() {
        let paths = [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods/besteffort/pod0d6f5b6e-8c1a-4c3e-9c8e-1f2a3b4c5d6e/{ID}"),
            format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/system.slice/containerd.service/kubepods-besteffort-pod1.slice:cri-containerd:{ID}"),
        ];
        for path in paths {
            assert_eq!(container_id(path.as_bytes()).as_deref(), Some(ID), "{path}");
        }
    }

    #[test]
    fn other_cgroups_name_no_container() {
        let inner = ID.replace('4', "5");
        let paths = [
            "/".to_string(),
            "/user.slice/user-1000.slice/session-2.scope".to_string(),
            format!("/kubepods.slice/kubepods-pod1.slice/crio-conmon-{ID}.scope"),
            format!("/docker/{}", ID.to_uppercase()),
            format!("/docker/{}", &ID[1..]),
            format!("/x/other:{ID}"),
        ];
        for path in paths {
            assert_eq!(container_id(path.as_bytes()), None, "{path}");
        }
        // A container inside a container: the inner one.
        let nested = format!("/docker/{ID}/docker/{inner}");
        assert_eq!(container_id(nested.as_bytes()), Some(inner));
        assert_eq!(container_id(b"/docker/\xff\n"), None);
    }

    #[test]
    fn this_machine_s_own_cgroup_is_found_by_its_id() {
        let Some(hierarchy) = CgroupHierarchy::open() else {
            panic!("this machine mounts a cgroup v2 hierarchy");
        };
        let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = mine
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line");
        let dir = hierarchy.mount().join(path.trim_start_matches('/'));
        let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir).unwrap());
        let mut cgroups = Cgroups::of(Some(hierarchy));
        let found = cgroups.get(id).expect("found by id");
        assert_eq!(found.path, path.as_bytes());
        assert_eq!(cgroups.get(id), Some(found), "kept");
        assert_eq!(cgroups.get(u64::MAX), None);
    }
}
