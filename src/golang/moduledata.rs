//! Go's module data (`runtime.moduledata`; its own section `.go.module` from Go 1.26): the
//! runtime's record of where its function table and its code are. Read for one value, the
//! text start, which Go 1.26 no longer writes in the function table's header.
//!
//! Its first fields have been the same since Go 1.16: the table header's address, six
//! slices (function names, compilation units, files, pc tables, the function records, the
//! function table), `findfunctab`, `minpc`, `maxpc`, then `text`.

use super::buildinfo::u64_at;
use super::image::Image;

const FUNCNAMETAB: usize = 8;
const MINPC: usize = 160;
const TEXT: usize = 176;
/// The fields read, from the start.
const READ: usize = TEXT + 8;

/// The text start of the module whose function table header is at `table` and whose
/// function names start at `funcnames`: found by those two pointers at the start of the
/// module data, in the writable data; `None` when no such record holds together.
pub fn text(image: &Image, table: u64, funcnames: u64) -> Option<u64> {
    image.writable().into_iter().find_map(|(_, data)| {
        (0..data.len().saturating_sub(READ))
            .step_by(8)
            .find_map(|at| text_at(image, &data[at..], table, funcnames))
    })
}

fn text_at(image: &Image, record: &[u8], table: u64, funcnames: u64) -> Option<u64> {
    if u64_at(record, 0)? != table || u64_at(record, FUNCNAMETAB)? != funcnames {
        return None;
    }
    let (minpc, text) = (u64_at(record, MINPC)?, u64_at(record, TEXT)?);
    // The first function starts at or after the text start, in code.
    (text <= minpc && image.code(text, 1).is_some()).then_some(text)
}
