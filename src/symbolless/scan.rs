//! Whole-file scans, each one linear pass: the anchor strings in the data, the code that
//! may reference them, and the direct calls into given address ranges. They find
//! candidates only; every candidate is decoded and checked before it is believed.

use memchr::memmem;

use super::image::Image;

/// An anchor string in the file: the addresses a reference to it may take (its start,
/// and each '/' boundary up to the suffix, for strings that a linker merged into the
/// tail of a longer one).
pub struct Anchor {
    pub targets: Vec<u64>,
}

/// No file holds more copies of one source-file name than this.
const MAX_ANCHORS: usize = 16;
/// Longest path prefix looked at before the suffix.
const MAX_PATH: usize = 512;

/// The strings of the data segments that end with `suffix` (then NUL), the suffix being
/// the whole string or following a '/'. The cheap first check: most programs have none.
pub fn anchors(image: &Image, suffix: &str) -> Vec<Anchor> {
    let needle = [suffix.as_bytes(), b"\0"].concat();
    let finder = memmem::Finder::new(&needle);
    let mut found = Vec::new();
    for s in image.segments.iter().filter(|s| !s.exec) {
        let bytes = image.bytes(s);
        for at in finder.find_iter(bytes).take(MAX_ANCHORS) {
            let head = &bytes[at.saturating_sub(MAX_PATH)..at];
            if !head.last().is_none_or(|&b| b == b'/' || b == 0) {
                continue;
            }
            let start = head.iter().rposition(|&b| b == 0).map_or(0, |p| p + 1);
            let base = s.va + (at - head.len()) as u64;
            let mut targets = vec![base + start as u64];
            for (i, _) in head[start..]
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'/')
            {
                let slash = base + (start + i) as u64;
                targets.extend([slash, slash + 1]);
            }
            targets.push(s.va + at as u64);
            targets.dedup();
            found.push(Anchor { targets });
        }
    }
    found
}

/// Instructions that may load one of `targets`: `lea reg, [rip+disp32]` everywhere, and
/// in a program at a fixed address also `mov r32, imm32`. Addresses of their first byte;
/// the search stops past `max` of them.
pub fn references(image: &Image, targets: &[u64], max: usize) -> Vec<u64> {
    let (Some(&lo), Some(&hi)) = (targets.iter().min(), targets.iter().max()) else {
        return Vec::new();
    };
    let hit = |t: u64| t.wrapping_sub(lo) <= hi - lo && targets.contains(&t);
    let mut found = Vec::new();
    for s in image.segments.iter().filter(|s| s.exec) {
        let code = image.bytes(s);
        // REX.W (0x48/0x4c), 0x8d, ModRM with mod 00 and r/m 101: RIP-relative.
        for at in memchr::memchr_iter(0x8d, code) {
            let (Some(at), Some(modrm), Some(disp)) = (
                at.checked_sub(1),
                code.get(at + 1),
                code.get(at + 2..at + 6),
            ) else {
                continue;
            };
            if code[at] & 0xfb != 0x48 || modrm & 0xc7 != 0x05 {
                continue;
            }
            let disp = i32::from_le_bytes([disp[0], disp[1], disp[2], disp[3]]);
            let next = s.va + at as u64 + 7;
            if hit(next.wrapping_add_signed(i64::from(disp))) {
                found.push(s.va + at as u64);
                if found.len() > max {
                    return found;
                }
            }
        }
        if !image.pie {
            found.extend(immediates(code, s.va, targets, max + 1));
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// `mov r32, imm32` (0xb8+r, with or without REX.B) loading one of `targets`.
fn immediates(code: &[u8], va: u64, targets: &[u64], max: usize) -> Vec<u64> {
    let mut found = Vec::new();
    for &t in targets {
        let Ok(imm) = u32::try_from(t) else {
            continue;
        };
        for at in memmem::find_iter(code, &imm.to_le_bytes()) {
            let Some(op) = at.checked_sub(1).map(|i| code[i]) else {
                continue;
            };
            if (0xb8..=0xbf).contains(&op) {
                let rex = at >= 2 && code[at - 2] == 0x41;
                found.push(va + (at - 1 - usize::from(rex)) as u64);
                if found.len() == max {
                    return found;
                }
            }
        }
    }
    found
}

/// Sorted, merged address ranges, to test many addresses against a few windows.
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn new(mut ranges: Vec<(u64, u64)>) -> Ranges {
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Ranges(merged)
    }

    pub fn contains(&self, a: u64) -> bool {
        let i = self.0.partition_point(|&(lo, _)| lo <= a);
        i > 0 && a < self.0[i - 1].1
    }
}

/// Direct calls (`call rel32`) anywhere in the code whose target falls in `within`:
/// (target, address of the call), sorted by target. Bytes that only look like a call
/// (inside another instruction) are among them, for the caller to weed out. None past
/// `max` of them: no real program has that many calls into a few windows.
pub fn calls_into(image: &Image, within: &Ranges, max: usize) -> Option<Vec<(u64, u64)>> {
    let mut found = Vec::new();
    for s in image.segments.iter().filter(|s| s.exec) {
        let code = image.bytes(s);
        for at in memchr::memchr_iter(0xe8, code) {
            let Some(rel) = code.get(at + 1..at + 5) else {
                continue;
            };
            let rel = i32::from_le_bytes([rel[0], rel[1], rel[2], rel[3]]);
            let site = s.va + at as u64;
            let target = (site + 5).wrapping_add_signed(i64::from(rel));
            if within.contains(target) {
                if found.len() == max {
                    return None;
                }
                found.push((target, site));
            }
        }
    }
    found.sort_unstable();
    Some(found)
}
