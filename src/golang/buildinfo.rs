//! The Go version recorded in `.go.buildinfo` (Go 1.13+), in both layouts: strings inline
//! after the header (Go 1.18+), or pointers to Go string headers (before). Some packagers
//! remove the build information (esbuild's releases since 0.27, Go 1.25 and 1.26); the
//! version is then read from the runtime's own `runtime.buildVersion` string.

use object::{Object, ObjectSection};

use super::image::Image;
use super::{malformed, GoError};

const MAGIC: &[u8] = b"\xff Go buildinf:";
/// The header: magic, pointer size, flags, then two pointers or padding.
const HEADER: usize = 32;
/// Go aligns the header to 16 bytes and looks for it in the first 64 KiB of the data:
/// 4,096 places in each writable segment (at most `symbols::MAX_SEGMENTS` of them).
const ALIGN: usize = 16;
const SEARCHED: usize = 64 * 1024;
const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_INLINE: u8 = 2;
/// Longer than any version string a toolchain writes ("devel go1.23-abcdef0123 Mon ...").
const MAX_VERSION: u64 = 256;

/// The header's bytes up to the end of its section or segment, where Go's own
/// `debug/buildinfo` finds it: the `.go.buildinfo` section, else the writable segments.
pub fn find<'a>(file: &object::File<'a>, image: &Image<'a>) -> Option<&'a [u8]> {
    let section = file.section_by_name(".go.buildinfo");
    if let Some(found) = section.and_then(|s| s.data().ok()).and_then(search) {
        return Some(found);
    }
    image
        .writable()
        .into_iter()
        .find_map(|(_, data)| search(data))
}

fn search(data: &[u8]) -> Option<&[u8]> {
    let searched = &data[..data.len().min(SEARCHED)];
    (0..searched.len())
        .step_by(ALIGN)
        .map(|at| &data[at..])
        .find(|rest| rest.starts_with(MAGIC) && rest.len() >= HEADER)
}

/// Reads `len` bytes at a virtual address, when the file holds them.
pub type Read<'r, 'a> = &'r dyn Fn(u64, u64) -> Option<&'a [u8]>;

/// The version string, e.g. `go1.19.8`, from a header that [`find`] returned.
pub fn version(header: &[u8], read: Read) -> Result<String, GoError> {
    let (Some(&ptr_size), Some(&flags), Some(rest)) = (
        header.get(MAGIC.len()),
        header.get(MAGIC.len() + 1),
        header.get(HEADER..),
    ) else {
        return Err(malformed(".go.buildinfo header cut short"));
    };
    if flags & FLAG_BIG_ENDIAN != 0 || ptr_size != 8 {
        return Err(malformed(format!(
            ".go.buildinfo of a big-endian or 32-bit build (pointer size {ptr_size})"
        )));
    }
    if flags & FLAG_INLINE != 0 {
        text(inline_string(rest))
    } else {
        text(pointed_string(header, read))
    }
}

fn text(bytes: Option<&[u8]>) -> Result<String, GoError> {
    let bytes = bytes.ok_or_else(|| malformed(".go.buildinfo version out of bounds"))?;
    let text =
        std::str::from_utf8(bytes).map_err(|_| malformed(".go.buildinfo version is not text"))?;
    Ok(text.to_string())
}

/// Go 1.18+: a uvarint length, then the bytes.
fn inline_string(data: &[u8]) -> Option<&[u8]> {
    let (len, used) = uvarint(data)?;
    if len > MAX_VERSION {
        return None;
    }
    data.get(used..used.checked_add(usize::try_from(len).ok()?)?)
}

/// Before Go 1.18: a pointer to a Go string header {data pointer, length}.
fn pointed_string<'a>(header: &[u8], read: Read<'_, 'a>) -> Option<&'a [u8]> {
    let string_header = read(u64_at(header, 16)?, 16)?;
    let (ptr, len) = (u64_at(string_header, 0)?, u64_at(string_header, 8)?);
    if len > MAX_VERSION {
        return None;
    }
    read(ptr, len)
}

/// The longest `runtime.buildVersion` taken: a release and a few experiments.
const MAX_RUNTIME_VERSION: u64 = 64;

/// The version in `runtime.buildVersion`, for a Go executable without build information:
/// a Go string header (data pointer, length) in the writable data, 8-aligned, pointing to
/// read-only bytes that spell a Go release (`go1.26.5`, `go1.25rc2`, `go1.24.1
/// X:boringcrypto`). A program may hold other such strings: then the release is unclear
/// and nothing is taken.
pub fn runtime_version(image: &Image) -> Result<String, GoError> {
    let mut found: Vec<&str> = Vec::new();
    for (_, data) in image.writable() {
        for at in (0..data.len().saturating_sub(15)).step_by(8) {
            let (Some(ptr), Some(len)) = (u64_at(data, at), u64_at(data, at + 8)) else {
                continue;
            };
            if !(6..=MAX_RUNTIME_VERSION).contains(&len) {
                continue;
            }
            let Some(text) = image.read_only(ptr, len).and_then(release_text) else {
                continue;
            };
            if !found.contains(&text) {
                found.push(text);
            }
        }
    }
    match found[..] {
        [version] => Ok(version.to_string()),
        [] => Err(GoError::Unsupported(
            "Go executable without build information or a Go version in it".into(),
        )),
        _ => Err(GoError::Unsupported(format!(
            "Go executable without build information, whose Go release is unclear: {}",
            found.join(", ")
        ))),
    }
}

/// The bytes as text when they are a release's version: `go1.N`, then `.M`, `rcM` or
/// `betaM` or nothing, then nothing or ` X:` and experiment names.
fn release_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (release, experiments) = match text.split_once(" X:") {
        Some((release, names)) => (release, Some(names)),
        None => (text, None),
    };
    let rest = release.strip_prefix("go1.")?;
    let minor_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let tail = &rest[minor_len..];
    let number = tail
        .strip_prefix('.')
        .or_else(|| tail.strip_prefix("rc"))
        .or_else(|| tail.strip_prefix("beta"))
        .unwrap_or(tail);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let names_ok = experiments.is_none_or(|names| {
        !names.is_empty()
            && names
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b',')
    });
    let number_ok = number.is_empty() && tail.is_empty() || digits(number);
    (minor_len > 0 && number_ok && names_ok).then_some(text)
}

/// The minor release of a version string: 19 for `go1.19.8`, `go1.19`, `go1.19rc2`,
/// `devel go1.19-abc` or `go1.19.8 X:boringcrypto`.
pub fn minor(version: &str) -> Result<u32, GoError> {
    let bare = version.strip_prefix("devel ").unwrap_or(version);
    let digits: String = bare
        .strip_prefix("go1.")
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .map_err(|_| GoError::Unsupported(format!("unrecognised Go version {version:?}")))
}

pub fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A little-endian base-128 number and the bytes it used; `None` when cut or too long.
pub fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u8) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.extend([8, flags]);
        h.resize(HEADER, 0);
        h
    }

    #[test]
    fn reads_inline_version() {
        let mut h = header(FLAG_INLINE);
        h.push(8);
        h.extend(b"go1.19.8");
        h.extend([0x03, b'm', b'o', b'd']);
        assert_eq!(inline_string(&h[HEADER..]), Some(&b"go1.19.8"[..]));
    }

    /// The pre-1.18 layout, in a fake memory: header at 0x1000, string header at 0x2000
    /// pointing to the text at 0x3000.
    #[test]
    fn reads_pointed_version() {
        let mut h = header(0);
        h[16..24].copy_from_slice(&0x2000u64.to_le_bytes());
        let mut string_header = 0x3000u64.to_le_bytes().to_vec();
        string_header.extend(9u64.to_le_bytes());
        let text = b"go1.17.13";
        let memory = |addr: u64, len: u64| -> Option<&[u8]> {
            let bytes: &[u8] = match addr {
                0x2000 => &string_header,
                0x3000 => text,
                _ => return None,
            };
            bytes.get(..len as usize)
        };
        assert_eq!(version(&h, &memory).as_deref(), Ok("go1.17.13"));
        h[16..24].copy_from_slice(&0x2008u64.to_le_bytes());
        assert!(matches!(version(&h, &memory), Err(GoError::Malformed(_))));
    }

    #[test]
    fn refuses_foreign_or_cut_headers() {
        let mut big = header(FLAG_INLINE | FLAG_BIG_ENDIAN);
        big.extend([1, b'x']);
        assert!(matches!(
            version(&big, &|_, _| None),
            Err(GoError::Malformed(_))
        ));
        assert!(version(&header(FLAG_INLINE)[..20], &|_, _| None).is_err());
    }

    #[test]
    fn refuses_cut_or_huge_inline_version() {
        assert_eq!(inline_string(&[8, b'g', b'o']), None);
        assert_eq!(inline_string(&[0xff, 0xff, 0xff, 0x7f]), None);
        assert_eq!(inline_string(&[0x80; 12]), None);
        assert_eq!(inline_string(&[]), None);
    }

    #[test]
    fn finds_header_only_when_aligned_and_whole() {
        let mut data = vec![0u8; 48];
        data.extend(header(FLAG_INLINE));
        assert_eq!(search(&data).map(|h| h.len()), Some(HEADER));
        let mut unaligned = vec![0u8; 40];
        unaligned.extend(header(FLAG_INLINE));
        assert_eq!(search(&unaligned), None);
        assert_eq!(search(&header(FLAG_INLINE)[..HEADER - 1]), None);
    }

    #[test]
    fn parses_minor_release() {
        for (text, minor) in [
            ("go1.19.8", 19),
            ("go1.20", 20),
            ("go1.21rc2", 21),
            ("devel go1.23-abc Mon", 23),
            ("go1.17.13 X:boringcrypto", 17),
        ] {
            assert_eq!(super::minor(text), Ok(minor), "{text}");
        }
        for text in ["", "go2.0", "go1.", "gccgo", "go1.x"] {
            assert!(matches!(super::minor(text), Err(GoError::Unsupported(_))));
        }
    }

    #[test]
    fn takes_only_release_versions_from_the_runtime() {
        for text in [
            "go1.26.5",
            "go1.25",
            "go1.25rc2",
            "go1.21beta1",
            "go1.24.1 X:boringcrypto",
            "go1.24.1 X:nocoverageredesign,loopvar",
        ] {
            assert_eq!(release_text(text.as_bytes()), Some(text), "{text}");
        }
        for text in [
            "go1.",
            "go1.26.",
            "go1.26x",
            "go1.26.5 ",
            "go1.26.5\0",
            "go1.26 X:",
            "go1.26 X:Loop",
            "devel go1.26-abc",
            "fips140only_go1.26",
            "go2.0",
        ] {
            assert_eq!(release_text(text.as_bytes()), None, "{text}");
        }
        assert_eq!(release_text(b"go1.2\xff"), None);
    }

    #[test]
    fn decodes_uvarint() {
        assert_eq!(uvarint(&[0x01]), Some((1, 1)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0x80]), None);
    }
}
