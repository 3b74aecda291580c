//! Functions found from inside: where one starts (proven two ways), what its code is
//! (decoded by following its jumps from that start, never by guessing where an
//! instruction begins), and the error calls it makes.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register,
};

use super::image::Image;

/// The farthest a function's anchor reference is looked for from its start, and the
/// farthest a start is from the one before it.
pub const MAX_FUNC: u64 = 64 << 10;
/// Instructions decoded for one function at most.
const MAX_INSTRUCTIONS: usize = 32 << 10;
/// Earlier starts tried when decoding up to a candidate start.
const BOUNDARY_TRIES: usize = 4;

/// Instructions one scan may decode in all: what a hostile file can cost, whatever it
/// holds. Bun's whole scan decodes about 41,000 (0.3% of it).
const DECODE_BUDGET: u64 = 1 << 24;

/// What is left of the decoding budget of one scan.
pub struct Budget(Cell<u64>);

impl Budget {
    pub fn new() -> Budget {
        Budget(Cell::new(DECODE_BUDGET))
    }

    /// Takes one instruction's worth; false once there is none left.
    fn spend(&self) -> bool {
        let left = self.0.get();
        self.0.set(left.saturating_sub(1));
        left > 0
    }

    pub fn exhausted(&self) -> bool {
        self.0.get() == 0
    }
}

/// Addresses the file gives as function starts, each sorted.
pub struct Starts {
    pub fde: Vec<u64>,
    pub calls: Vec<u64>,
    pub pointers: Vec<u64>,
    /// All of the above and the start of each code segment.
    pub all: Vec<u64>,
}

impl Starts {
    pub fn new(image: &Image, fde: Vec<u64>, calls: Vec<u64>, mut pointers: Vec<u64>) -> Starts {
        pointers.sort_unstable();
        pointers.dedup();
        let mut all: Vec<u64> = fde.iter().chain(&calls).chain(&pointers).copied().collect();
        all.extend(image.segments.iter().filter(|s| s.exec).map(|s| s.va));
        all.sort_unstable();
        all.dedup();
        Starts {
            fde,
            calls,
            pointers,
            all,
        }
    }

    /// Where a function's decoding stops: the start of another function, as the unwind
    /// table or a call says (a pointer alone may be data that looks like an address).
    fn is_other_function(&self, a: u64) -> bool {
        self.fde.binary_search(&a).is_ok() || self.calls.binary_search(&a).is_ok()
    }
}

/// Where decoding starts, before a possible call instruction, to see whether the
/// instruction stream reaches it: x86 decoding falls into step with the true
/// instruction boundaries within a few instructions, from wherever it starts.
const RESYNC_FROM: [u64; 4] = [40, 32, 24, 16];

/// Whether the `call rel32` bytes at `site` are an instruction, not the inside of one:
/// decoding from several points before it must land on it.
pub fn genuine_call(image: &Image, budget: &Budget, site: u64) -> bool {
    let landed = RESYNC_FROM
        .iter()
        .filter(|&&back| {
            let Some(from) = site.checked_sub(back) else {
                return false;
            };
            let Some(code) = image.code_at(from) else {
                return false;
            };
            let code = &code[..(back as usize).min(code.len())];
            let mut decoder = Decoder::with_ip(64, code, from, DecoderOptions::NONE);
            let mut instr = Instruction::default();
            while decoder.can_decode() && budget.spend() {
                decoder.decode_out(&mut instr);
            }
            !decoder.can_decode() && !instr.is_invalid() && instr.next_ip() == site
        })
        .count();
    landed >= 3
}

/// A start and the ways it was proven, for the `tracing` line.
#[derive(Debug, Clone)]
pub struct Proof {
    pub ways: Vec<&'static str>,
}

/// Proven start: two of an unwind-table entry, a direct call's target, a pointer in the
/// file, and decoding from an earlier start landing on it right after the end of a
/// function; the unwind table or that decoding must be one of the two, so that the
/// start is an instruction boundary and not merely a value found somewhere.
pub fn prove(image: &Image, budget: &Budget, starts: &Starts, at: u64) -> Option<Proof> {
    let mut ways = Vec::new();
    let fde = starts.fde.binary_search(&at).is_ok();
    if fde {
        ways.push("unwind table");
    }
    if starts.calls.binary_search(&at).is_ok() {
        ways.push("call target");
    }
    if starts.pointers.binary_search(&at).is_ok() {
        ways.push("pointer");
    }
    let after = after_function_end(image, budget, starts, at);
    if let Some(way) = after {
        ways.push(way);
    }
    (ways.len() >= 2 && (fde || after.is_some())).then_some(Proof { ways })
}

/// Decodes linearly from the earlier starts up to `at`: it must land on `at` exactly,
/// right after an instruction that ends a function (and any padding).
fn after_function_end(
    image: &Image,
    budget: &Budget,
    starts: &Starts,
    at: u64,
) -> Option<&'static str> {
    let earlier = starts.all.partition_point(|&s| s < at);
    let tries = starts.all[..earlier]
        .iter()
        .rev()
        .take_while(|&&s| at - s <= MAX_FUNC)
        .take(BOUNDARY_TRIES);
    for &from in tries {
        let Some(code) = image.code_at(from) else {
            continue;
        };
        let len = ((at - from) as usize).min(code.len());
        let mut decoder = Decoder::with_ip(64, &code[..len], from, DecoderOptions::NONE);
        let mut instr = Instruction::default();
        let mut last = None;
        let mut padded = false;
        while decoder.can_decode() {
            if !budget.spend() {
                return None;
            }
            decoder.decode_out(&mut instr);
            if instr.is_invalid() {
                break;
            }
            if matches!(instr.mnemonic(), Mnemonic::Int3 | Mnemonic::Nop) {
                padded = true;
            } else {
                last = Some(instr.mnemonic());
                padded = false;
            }
        }
        if instr.is_invalid() || instr.next_ip() != at {
            continue;
        }
        return match (last, padded) {
            (Some(Mnemonic::Ret), false) => Some("after a ret"),
            (Some(Mnemonic::Jmp), false) => Some("after a jmp"),
            (Some(Mnemonic::Call), false) => Some("after a call that does not return"),
            (Some(Mnemonic::Ud2 | Mnemonic::Hlt), false) => Some("after a trap"),
            (Some(Mnemonic::Ret | Mnemonic::Jmp | Mnemonic::Call | Mnemonic::Ud2), true) => {
                Some("after a function's end and padding")
            }
            _ => None,
        };
    }
    None
}

/// A function's instructions, reached from its start by following every jump that stays
/// in it, and the functions it calls directly.
pub struct Body {
    pub instrs: BTreeMap<u64, Instruction>,
    pub callees: Vec<u64>,
}

/// Decodes the function at `start`. A jump or fall-through to another known start is a
/// tail call, not followed; so is a jump outside MAX_FUNC. None when any reached byte
/// does not decode: such a function is not understood well enough to be probed.
pub fn body(image: &Image, budget: &Budget, starts: &Starts, start: u64) -> Option<Body> {
    let end = start.saturating_add(MAX_FUNC);
    let mut instrs = BTreeMap::new();
    let mut callees = Vec::new();
    let mut todo = vec![start];
    let mut instr = Instruction::default();
    while let Some(from) = todo.pop() {
        let code = image.code_at(from)?;
        let code = &code[..code.len().min((end - from) as usize)];
        let mut decoder = Decoder::with_ip(64, code, from, DecoderOptions::NONE);
        while decoder.can_decode() {
            let at = decoder.ip();
            if instrs.contains_key(&at) || (at != start && starts.is_other_function(at)) {
                break;
            }
            if !budget.spend() {
                return None;
            }
            decoder.decode_out(&mut instr);
            if instr.is_invalid() || instrs.len() >= MAX_INSTRUCTIONS {
                return None;
            }
            instrs.insert(at, instr);
            let target = direct_target(&instr);
            let inside =
                |t: u64| t >= start && t < end && (t == start || !starts.is_other_function(t));
            match instr.flow_control() {
                FlowControl::Call => callees.extend(target),
                FlowControl::ConditionalBranch => todo.extend(target.filter(|&t| inside(t))),
                FlowControl::UnconditionalBranch => {
                    todo.extend(target.filter(|&t| inside(t)));
                    break;
                }
                FlowControl::Return
                | FlowControl::IndirectBranch
                | FlowControl::Interrupt
                | FlowControl::Exception => break,
                _ => {}
            }
        }
    }
    callees.sort_unstable();
    callees.dedup();
    Some(Body { instrs, callees })
}

fn direct_target(instr: &Instruction) -> Option<u64> {
    matches!(
        instr.op0_kind(),
        OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16
    )
    .then(|| instr.near_branch_target())
}

/// The address an instruction loads: `lea reg, [rip+disp]`, or `mov r32, imm32`.
/// The immediate form only counts in a program at a fixed address (`imm32`).
pub fn loaded_address(instr: &Instruction, imm32: bool) -> Option<u64> {
    match instr.code() {
        Code::Lea_r64_m | Code::Lea_r32_m if instr.is_ip_rel_memory_operand() => {
            Some(instr.ip_rel_memory_address())
        }
        Code::Mov_r32_imm32 if imm32 => Some(u64::from(instr.immediate32())),
        _ => None,
    }
}

/// Instructions looked at on each side of an anchor reference for the error call's
/// other arguments.
const WINDOW: usize = 12;

/// The (library, reason) pairs of the error calls that pass one of `targets` as the
/// file: the first and third arguments (edi, edx) as constants set in the same
/// straight-line code as the file argument.
pub fn error_codes(body: &Body, targets: &[u64], imm32: bool) -> BTreeSet<(u32, u32)> {
    let mut codes = BTreeSet::new();
    for (&at, instr) in &body.instrs {
        if !loaded_address(instr, imm32).is_some_and(|a| targets.contains(&a)) {
            continue;
        }
        let mut run: Vec<&Instruction> = body
            .instrs
            .range(..at)
            .rev()
            .scan(at, |next, (_, i)| {
                let joined = i.next_ip() == *next && !ends_run(i);
                *next = i.ip();
                joined.then_some(i)
            })
            .take(WINDOW)
            .collect();
        run.reverse();
        let mut next = at;
        for (_, i) in body.instrs.range(at..).take(WINDOW) {
            if i.ip() != next {
                break;
            }
            run.push(i);
            next = i.next_ip();
            if ends_run(i) {
                break;
            }
        }
        if let (Some(lib), Some(reason)) = constants(&run) {
            codes.insert((lib, reason));
        }
    }
    codes
}

fn ends_run(i: &Instruction) -> bool {
    i.flow_control() != FlowControl::Next
}

/// The constants that a run of instructions leaves in edi and edx: `mov`, `xor r, r`, and
/// the size-optimised `push imm; pop r`.
fn constants(run: &[&Instruction]) -> (Option<u32>, Option<u32>) {
    let mut regs: HashMap<Register, Option<u32>> = HashMap::new();
    let mut pushed = None;
    for i in run {
        let reg = i.op0_register().full_register32();
        let same = i.op1_kind() == OpKind::Register && i.op1_register() == i.op0_register();
        let value = match i.mnemonic() {
            Mnemonic::Mov => i.try_immediate(1).ok().map(|v| v as u32),
            Mnemonic::Xor if same => Some(0),
            Mnemonic::Pop => pushed,
            _ => None,
        };
        pushed = (i.mnemonic() == Mnemonic::Push)
            .then(|| i.try_immediate(0).ok().map(|v| v as u32))
            .flatten();
        if i.op0_kind() == OpKind::Register && matches!(reg, Register::EDI | Register::EDX) {
            regs.insert(reg, value);
        }
    }
    let get = |r| regs.get(&r).copied().flatten();
    (get(Register::EDI), get(Register::EDX))
}
