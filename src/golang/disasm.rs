//! Return instructions of a function, found by decoding it from entry to end: a uprobe
//! placed anywhere but on an instruction's first byte corrupts the program, so bytes that
//! merely look like `RET` (inside an operand or a constant) must never be taken.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

use super::Arch;

/// Return instructions a probed function may have. crypto/tls's Read, Write and
/// handshakes have 3 to 13 in nine real Go programs of 2 to 127 MB (Go 1.19 to 1.25);
/// the most in any of their 441,000 functions is 566 (generated decoders). Each is a
/// probe, and a function of nothing but `RET`s would be one per byte.
pub const MAX_RETURNS: usize = 64;

/// Offsets, from the function's start, of every return instruction in `code`, the
/// function's bytes from entry to end. Errors when the bytes do not decode as whole
/// instructions (no return site is better than a wrong one), and past MAX_RETURNS.
pub fn returns(arch: Arch, code: &[u8]) -> Result<Vec<u64>, String> {
    let found = match arch {
        Arch::X86_64 => x86_64(code)?,
        Arch::Arm64 => arm64(code)?,
    };
    if found.len() > MAX_RETURNS {
        return Err(format!(
            "{} or more return instructions, more than the {MAX_RETURNS} a Go compiler emits",
            found.len()
        ));
    }
    Ok(found)
}

/// Linear sweep: Go's amd64 compiler puts no data in functions (jump tables and
/// constants live in read-only data), so consecutive decoding meets every instruction.
fn x86_64(code: &[u8]) -> Result<Vec<u64>, String> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut found = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        if instr.is_invalid() {
            return Err(format!("no valid instruction at +{:#x}", instr.ip()));
        }
        // `Ret` covers `ret`, `ret imm16` and prefixed forms; far returns are `Retf`.
        if instr.mnemonic() == Mnemonic::Ret {
            found.push(instr.ip());
            if found.len() > MAX_RETURNS {
                break;
            }
        }
    }
    Ok(found)
}

/// arm64 instructions are 4-byte words, so decoding needs no sweep; what can deceive is
/// data: Go's arm64 assembler puts literal pools (constants loaded by `LDR (literal)`)
/// inside functions. Words that a literal load in the function reads are data, not code.
fn arm64(code: &[u8]) -> Result<Vec<u64>, String> {
    if code.len() % 4 != 0 {
        return Err(format!(
            "{} bytes is not a whole number of instructions",
            code.len()
        ));
    }
    let words: Vec<u32> = code
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    let mut data = vec![false; words.len()];
    for (at, &word) in words.iter().enumerate() {
        if let Some((target, len)) = literal_load(word) {
            let first = at as i64 + target;
            for i in first..first + len {
                if let Some(slot) = usize::try_from(i).ok().and_then(|i| data.get_mut(i)) {
                    *slot = true;
                }
            }
        }
    }
    Ok(words
        .iter()
        .zip(&data)
        .enumerate()
        .filter(|&(_, (&word, &is_data))| !is_data && is_arm64_ret(word))
        .map(|(at, _)| at as u64 * 4)
        .take(MAX_RETURNS + 1)
        .collect())
}

/// `RET Xn` (Go writes `RET` = `RET X30`), and the pointer-authenticating `RETAA`/`RETAB`.
fn is_arm64_ret(word: u32) -> bool {
    word & 0xffff_fc1f == 0xd65f_0000 || word == 0xd65f_0bff || word == 0xd65f_0fff
}

/// For `LDR (literal)` (general and SIMD registers, `LDRSW`), the words it reads:
/// offset from the instruction in words (imm19, signed) and count. `PRFM` reads nothing.
fn literal_load(word: u32) -> Option<(i64, i64)> {
    if word & 0x3b00_0000 != 0x1800_0000 {
        return None;
    }
    let simd = word & (1 << 26) != 0;
    let words = match (word >> 30, simd) {
        (0b00, _) | (0b10, false) => 1,
        (0b01, _) => 2,
        (0b10, true) => 4,
        _ => return None,
    };
    // Sign-extend the 19-bit word offset in bits 5..24.
    let imm19 = ((word >> 5) & 0x7ffff) as i32;
    let offset = (imm19 << 13) >> 13;
    Some((i64::from(offset), words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_x86_returns_at_instruction_starts_only() {
        let code = [
            0x48, 0xc7, 0xc0, 0xc3, 0x00, 0x00, 0x00, // mov rax, 0xc3: a 0xc3 operand
            0x74, 0x01, // je +1
            0xc3, // ret
            0xf3, 0xc3, // rep ret
            0xc2, 0x08, 0x00, // ret 8
            0xcb, // retf: not a near return
            0xcc, // int3
        ];
        assert_eq!(x86_64(&code), Ok(vec![9, 10, 12]));
    }

    #[test]
    fn refuses_undecodable_or_cut_x86() {
        assert!(x86_64(&[0x0f, 0x0b, 0x06]).is_err()); // ud2, then push es (invalid in 64-bit)
        assert!(x86_64(&[0xc3, 0x48, 0xc7]).is_err()); // cut mid-instruction
        assert_eq!(x86_64(&[]), Ok(vec![]));
    }

    fn words(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn finds_arm64_returns_but_not_literal_pool_words() {
        let code = words(&[
            0xf81f_0ffe, // str x30, [sp, #-16]!
            0x5800_0080, // ldr x0, #+16 (8 bytes: words 5 and 6)
            0xd65f_03c0, // ret
            0xd65f_0220, // ret x17
            0x1400_0000, // b .
            0xd65f_03c0, // literal pool: the 8-byte constant loaded above
            0xd65f_03c0,
            0xd65f_0bff, // retaa
        ]);
        assert_eq!(arm64(&code), Ok(vec![8, 12, 28]));
    }

    #[test]
    fn decodes_literal_loads() {
        assert_eq!(literal_load(0x1800_0040), Some((2, 1))); // ldr w0, #+8
        assert_eq!(literal_load(0x58ff_ffe0), Some((-1, 2))); // ldr x0, #-4
        assert_eq!(literal_load(0x9c00_0020), Some((1, 4))); // ldr q0, #+4
        assert_eq!(literal_load(0x9800_0020), Some((1, 1))); // ldrsw x0, #+4
        assert_eq!(literal_load(0xd800_0020), None); // prfm
        assert_eq!(literal_load(0xd65f_03c0), None);
    }

    #[test]
    fn refuses_partial_arm64_words() {
        assert!(arm64(&[0xc0, 0x03, 0x5f]).is_err());
        // A literal load pointing far outside the function is harmless.
        assert_eq!(arm64(&words(&[0x587f_ffe0, 0xd65f_03c0])), Ok(vec![4]));
    }
}
