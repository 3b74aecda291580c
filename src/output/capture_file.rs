//! Capture files hold everyone's decrypted traffic, and sslsniff runs as root: such a
//! file is created new, readable by its owner only, and never through a symlink (in a
//! shared directory another user could plant one pointing at a file root owns), as
//! tcpdump creates its `-w` files.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Creates the capture file at `path`. `overwrite` allows replacing a regular file that
/// we own and that has no other name.
pub fn create(path: &Path, overwrite: bool) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    if !overwrite {
        return opts.create_new(true).open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                anyhow::anyhow!("the file exists; sslsniff writes captures only to new files (or add --overwrite)")
            } else {
                anyhow::Error::new(e).context("cannot create the file")
            }
        });
    }
    let file = opts
        .create(true)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow::anyhow!("the path is a symlink; refused"),
            _ => anyhow::Error::new(e).context("cannot open the file"),
        })?;
    let meta = file.metadata().context("cannot inspect the file")?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || meta.uid() != me || meta.nlink() != 1 {
        bail!("--overwrite replaces only a regular file owned by this user with a single name");
    }
    file.set_len(0).context("cannot truncate the file")?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .context("cannot make the file private")?;
    Ok(file)
}
