//! Hostile input made on demand: ELF files and HPACK header blocks crafted to cost a
//! careless parser far more than their size, the small ELF writer that makes them, and
//! the seeded generator, runner and allocation counter of the structured fuzzers.
//!
//! Standard library only: the unit tests in `src/` (through `#[path]`), the end-to-end
//! tests and the bench all build this one file.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A python3 program that maps, with PROT_EXEC, each file whose path it reads on stdin,
/// keeps it mapped, and says `mapped` after each (and `ready` first): how a crafted file
/// reaches sslsniff, as a library a process maps.
pub const MAPPER_SCRIPT: &str = "import mmap, sys\n\
    print('ready', flush=True)\n\
    held = []\n\
    for line in sys.stdin:\n\
    \x20   f = open(line.strip(), 'rb')\n\
    \x20   held.append(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ | mmap.PROT_EXEC))\n\
    \x20   print('mapped', flush=True)\n";

// ---- A seeded generator ----

/// splitmix64: every input of a fuzz run is reproducible from one number.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn upto(&mut self, n: usize) -> usize {
        self.below(n as u64 + 1) as usize
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Sizes that reach edges: mostly small, sometimes near a power of two.
    pub fn size(&mut self, max: usize) -> usize {
        let n = match self.below(4) {
            0 => self.upto(16),
            1 => self.upto(256),
            2 => {
                let p = 1usize << self.below(20);
                p.wrapping_add(self.below(3) as usize).wrapping_sub(1)
            }
            _ => self.upto(max),
        };
        n.min(max)
    }

    /// Damages `data` a little: flipped bits, overwritten or dropped bytes, a cut.
    pub fn mutate(&mut self, data: &mut Vec<u8>) {
        for _ in 0..1 + self.below(4) {
            if data.is_empty() {
                return;
            }
            let at = self.below(data.len() as u64) as usize;
            match self.below(5) {
                0 => data[at] ^= 1 << self.below(8),
                1 => data[at] = self.byte(),
                2 => data[at] = *self.pick(&[0x00, 0x7f, 0x80, 0xff]),
                3 => drop(data.remove(at)),
                _ => data.truncate(at),
            }
        }
    }
}

// ---- The fuzz runner ----

/// How long and from where a fuzz run goes: `SSLSNIFF_FUZZ_SECONDS` (per target),
/// `SSLSNIFF_FUZZ_ITERATIONS` (per target, instead of a time), `SSLSNIFF_FUZZ_SEED` and
/// `SSLSNIFF_FUZZ_INPUT` (run that one input only, to reproduce a failure).
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    pub seconds: f64,
    pub iterations: Option<u64>,
    pub seed: u64,
    pub input: Option<u64>,
}

/// The seed of a run that names none: fixed, so that `make test` is repeatable.
pub const DEFAULT_SEED: u64 = 0x5eed_0023;
/// Seconds each fuzz target runs in `make test` unless SSLSNIFF_FUZZ_SECONDS says
/// otherwise.
pub const FUZZ_SECONDS: f64 = 2.5;

/// How long one fuzz input may run before it counts as a hang: inputs take microseconds
/// to milliseconds; a debug build or a busy machine is slower, never this much.
pub fn per_input() -> Duration {
    Duration::from_secs(if cfg!(debug_assertions) { 20 } else { 2 })
}

/// The most a step that takes `ms` milliseconds on a quiet machine's release build may
/// take in a test: twenty times that, for a machine that other work keeps busy (a test
/// must hold there), and twenty times more in a debug build. The work these bounds
/// guard against took seconds to minutes: orders of magnitude past them.
pub fn release_ms(ms: u64) -> Duration {
    Duration::from_millis(if cfg!(debug_assertions) {
        ms * 400
    } else {
        ms * 20
    })
}

/// `f`'s result and how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

impl Knobs {
    pub fn from_env(default_seconds: f64) -> Knobs {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number = |name: &str| {
            var(name).map(|v| {
                let v = v.trim();
                let parsed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => v.parse(),
                };
                parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
        };
        Knobs {
            seconds: var("SSLSNIFF_FUZZ_SECONDS")
                .map(|v| v.parse().expect("SSLSNIFF_FUZZ_SECONDS is a number"))
                .unwrap_or(default_seconds),
            iterations: number("SSLSNIFF_FUZZ_ITERATIONS"),
            seed: number("SSLSNIFF_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
            input: number("SSLSNIFF_FUZZ_INPUT"),
        }
    }
}

/// The generator of input `i` of a run from `seed`.
pub fn input_rng(seed: u64, i: u64) -> Rng {
    let mut mix = Rng::new(seed ^ i.wrapping_mul(0xa076_1d64_78bd_642f));
    Rng::new(mix.next_u64())
}

/// Where a fuzz run's worker is, for the thread that watches it.
struct Progress {
    started: Instant,
    /// The input running, and since when (nanoseconds into the run).
    current: AtomicU64,
    began_ns: AtomicU64,
    failed: AtomicBool,
    done: AtomicBool,
}

/// Runs `target` on inputs 0, 1, 2, ... (each generated from its own seed) on a worker
/// thread until the knobs' time or iteration count is spent; fails naming the input
/// when one panics or runs longer than `per_input` (a hang). Returns the inputs run.
pub fn fuzz(
    name: &str,
    knobs: Knobs,
    per_input: Duration,
    target: impl Fn(&mut Rng) + Send + 'static,
) -> u64 {
    let progress = Arc::new(Progress {
        started: Instant::now(),
        current: AtomicU64::new(0),
        began_ns: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        done: AtomicBool::new(false),
    });
    let worker = {
        let progress = progress.clone();
        thread::Builder::new()
            .name(format!("fuzz {name}"))
            .spawn(move || work(&progress, knobs, target))
            .expect("a fuzz thread starts")
    };
    let reproduce = |i: u64| {
        let seed = knobs.seed;
        format!("reproduce with SSLSNIFF_FUZZ_SEED={seed:#x} SSLSNIFF_FUZZ_INPUT={i}")
    };
    while !progress.done.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(10));
        let began = Duration::from_nanos(progress.began_ns.load(Ordering::SeqCst));
        let running = progress.started.elapsed().saturating_sub(began);
        if !progress.done.load(Ordering::SeqCst) && running > per_input {
            let i = progress.current.load(Ordering::SeqCst);
            panic!(
                "fuzz {name}: input {i} still running after {per_input:?} ({})",
                reproduce(i)
            );
        }
    }
    let ran = worker.join().expect("the fuzz worker catches panics");
    if progress.failed.load(Ordering::SeqCst) {
        let i = progress.current.load(Ordering::SeqCst);
        panic!("fuzz {name}: input {i} panicked ({})", reproduce(i));
    }
    let (count, took) = (ran - knobs.input.unwrap_or(0), progress.started.elapsed());
    eprintln!(
        "fuzz {name}: {count} inputs in {took:.1?}, seed {:#x}",
        knobs.seed
    );
    ran
}

/// The worker: inputs one after the other until the knobs say stop or one panics.
fn work(progress: &Progress, knobs: Knobs, target: impl Fn(&mut Rng)) -> u64 {
    let (mut i, last) = match knobs.input {
        Some(only) => (only, Some(only + 1)),
        None => (0, knobs.iterations),
    };
    let deadline = Duration::from_secs_f64(knobs.seconds);
    while last.map_or(progress.started.elapsed() < deadline, |end| i < end) {
        progress.current.store(i, Ordering::SeqCst);
        let now = progress.started.elapsed().as_nanos() as u64;
        progress.began_ns.store(now, Ordering::SeqCst);
        let mut rng = input_rng(knobs.seed, i);
        if catch_unwind(AssertUnwindSafe(|| target(&mut rng))).is_err() {
            progress.failed.store(true, Ordering::SeqCst);
            break;
        }
        i += 1;
    }
    progress.done.store(true, Ordering::SeqCst);
    i
}

// ---- Counting allocations: a measure of work that a busy machine cannot blur ----

/// A global allocator that counts the bytes each thread asks for (reallocations count
/// their new size: a copy of that many bytes).
pub struct Counting;

thread_local! {
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get().wrapping_add(bytes as u64)));
}

/// Bytes this thread has allocated so far.
pub fn allocated() -> u64 {
    ALLOCATED.try_with(Cell::get).unwrap_or(0)
}

/// Bytes `f` allocates on this thread, with its result.
pub fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = allocated();
    let out = f();
    (out, allocated().wrapping_sub(before))
}

// SAFETY: every call goes straight to the system allocator with the caller's arguments;
// the counter is a thread-local Cell without a destructor, so counting never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

// ---- A small ELF writer (64-bit, little-endian) ----

pub const PT_LOAD: u32 = 1;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;
pub const SHT_PROGBITS: u32 = 1;
pub const SHT_SYMTAB: u32 = 2;
pub const SHT_STRTAB: u32 = 3;
pub const SHT_DYNSYM: u32 = 11;
pub const SHF_WRITE: u64 = 1;
pub const SHF_ALLOC: u64 = 2;
pub const SHF_EXECINSTR: u64 = 4;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;
/// A global function symbol's `st_info`.
pub const STT_FUNC_GLOBAL: u8 = 0x12;
const EHDR: usize = 64;
const PHDR: usize = 56;
const SHDR: usize = 64;
/// Where files written here load.
pub const BASE: u64 = 0x40_0000;

/// A section; the `i`th of `Elf::sections` is section `i + 1` of the file.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub name: String,
    pub kind: u32,
    pub flags: u64,
    /// Its address; its file offset is chosen to match it modulo 4096 (0: no address).
    pub addr: u64,
    pub data: Vec<u8>,
    pub link: u32,
    pub info: u32,
    pub entsize: u64,
}

impl Section {
    pub fn new(name: &str, kind: u32, flags: u64, addr: u64, data: Vec<u8>) -> Section {
        Section {
            name: name.to_string(),
            kind,
            flags,
            addr,
            data,
            ..Section::default()
        }
    }
}

/// What a loadable segment covers.
#[derive(Debug, Clone, Copy)]
pub enum Covers {
    /// The whole file, loaded at this address.
    File(u64),
    /// Section `i` of `Elf::sections`.
    Section(usize),
}

#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub flags: u32,
    pub covers: Covers,
}

#[derive(Debug, Clone)]
pub struct Elf {
    pub kind: u16,
    pub machine: u16,
    pub entry: u64,
    pub segments: Vec<Segment>,
    pub sections: Vec<Section>,
    /// Replaces the section name table that `sections`' names make; each section's
    /// name then points somewhere into it.
    pub shstrtab: Option<Vec<u8>>,
}

impl Default for Elf {
    fn default() -> Elf {
        Elf {
            kind: ET_EXEC,
            machine: EM_X86_64,
            entry: 0,
            segments: Vec::new(),
            sections: Vec::new(),
            shstrtab: None,
        }
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend(v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend(v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend(v.to_le_bytes());
}

impl Elf {
    /// The file: header, program headers, section contents, section headers.
    pub fn build(&self) -> Vec<u8> {
        let (names, name_at) = self.names();
        let mut offsets = Vec::new();
        let mut end = (EHDR + PHDR * self.segments.len()).next_multiple_of(16);
        for s in &self.sections {
            let mut at = end.next_multiple_of(16);
            if s.addr != 0 {
                let want = (s.addr % 4096) as usize;
                at += (want + 4096 - at % 4096) % 4096;
            }
            offsets.push(at);
            end = at + s.data.len();
        }
        let names_at = end;
        let shoff = (names_at + names.len()).next_multiple_of(8);
        let count = self.sections.len() + 2;
        let len = shoff + SHDR * count;
        let mut out = self.header(shoff, count);
        for seg in &self.segments {
            let (offset, vaddr, size) = match seg.covers {
                Covers::File(vaddr) => (0, vaddr, len),
                Covers::Section(i) => (
                    offsets[i],
                    self.sections[i].addr,
                    self.sections[i].data.len(),
                ),
            };
            put32(&mut out, PT_LOAD);
            put32(&mut out, seg.flags);
            for v in [offset as u64, vaddr, vaddr, size as u64, size as u64, 4096] {
                put64(&mut out, v);
            }
        }
        for (s, &at) in self.sections.iter().zip(&offsets) {
            out.resize(at, 0);
            out.extend(&s.data);
        }
        out.resize(names_at, 0);
        out.extend(&names);
        out.resize(shoff, 0);
        self.section_headers(&mut out, &offsets, &name_at, (names_at, names.len()));
        out
    }

    fn header(&self, shoff: usize, sections: usize) -> Vec<u8> {
        let mut out = b"\x7fELF\x02\x01\x01".to_vec();
        out.resize(16, 0);
        put16(&mut out, self.kind);
        put16(&mut out, self.machine);
        put32(&mut out, 1);
        put64(&mut out, self.entry);
        put64(&mut out, EHDR as u64);
        put64(&mut out, shoff as u64);
        put32(&mut out, 0);
        put16(&mut out, EHDR as u16);
        put16(&mut out, PHDR as u16);
        // Past 0xffff entries the counts live in section 0 (extended numbering).
        put16(&mut out, self.segments.len().min(0xffff) as u16);
        put16(&mut out, SHDR as u16);
        let (shnum, shstrndx) = if sections >= 0xff00 {
            (0, 0xffff)
        } else {
            (sections as u16, sections as u16 - 1)
        };
        put16(&mut out, shnum);
        put16(&mut out, shstrndx);
        out
    }

    /// The section name table, and where each section's name starts in it.
    fn names(&self) -> (Vec<u8>, Vec<u32>) {
        if let Some(table) = &self.shstrtab {
            let len = table.len().max(1) as u32;
            let at = (0..=self.sections.len() as u32)
                .map(|i| i * 7 % len)
                .collect();
            return (table.clone(), at);
        }
        let mut table = vec![0];
        let mut at = Vec::new();
        for name in self
            .sections
            .iter()
            .map(|s| &s.name[..])
            .chain([".shstrtab"])
        {
            at.push(table.len() as u32);
            table.extend(name.as_bytes());
            table.push(0);
        }
        (table, at)
    }

    fn section_headers(
        &self,
        out: &mut Vec<u8>,
        offsets: &[usize],
        name_at: &[u32],
        names: (usize, usize),
    ) {
        let count = self.sections.len() + 2;
        // Section 0 carries the counts that do not fit the file header.
        let extended = |n: usize, limit: usize| if n >= limit { n as u64 } else { 0 };
        let first = Section {
            link: if count >= 0xff00 { count as u32 - 1 } else { 0 },
            info: extended(self.segments.len(), 0xffff) as u32,
            ..Section::default()
        };
        section_header(out, 0, &first, 0, extended(count, 0xff00));
        for (i, s) in self.sections.iter().enumerate() {
            section_header(out, name_at[i], s, offsets[i] as u64, s.data.len() as u64);
        }
        let table = Section::new("", SHT_STRTAB, 0, 0, Vec::new());
        let last = name_at[self.sections.len()];
        section_header(out, last, &table, names.0 as u64, names.1 as u64);
    }
}

fn section_header(out: &mut Vec<u8>, name: u32, s: &Section, offset: u64, size: u64) {
    put32(out, name);
    put32(out, s.kind);
    for v in [s.flags, s.addr, offset, size] {
        put64(out, v);
    }
    put32(out, s.link);
    put32(out, s.info);
    put64(out, 1);
    put64(out, s.entsize);
}

/// One symbol table entry.
pub fn symbol(name: u32, info: u8, shndx: u16, value: u64, size: u64) -> [u8; 24] {
    let mut out = Vec::with_capacity(24);
    put32(&mut out, name);
    out.push(info);
    out.push(0);
    put16(&mut out, shndx);
    put64(&mut out, value);
    put64(&mut out, size);
    out.try_into().expect("24 bytes")
}

/// A symbol table of functions (name, address, size) defined in section `shndx`, and
/// its string table.
pub fn symbol_table(symbols: &[(&[u8], u64, u64)], shndx: u16) -> (Vec<u8>, Vec<u8>) {
    let mut table = vec![0u8; 24];
    let mut strings = vec![0u8];
    for &(name, value, size) in symbols {
        table.extend(symbol(
            strings.len() as u32,
            STT_FUNC_GLOBAL,
            shndx,
            value,
            size,
        ));
        strings.extend(name);
        strings.push(0);
    }
    (table, strings)
}

/// `.symtab` and `.strtab` sections for a table; `strtab` is the index in
/// `Elf::sections` the string table will have.
pub fn symbol_sections(table: Vec<u8>, strings: Vec<u8>, strtab: usize) -> [Section; 2] {
    let symtab = Section {
        link: strtab as u32 + 1,
        info: 1,
        entsize: 24,
        ..Section::new(".symtab", SHT_SYMTAB, 0, 0, table)
    };
    [symtab, Section::new(".strtab", SHT_STRTAB, 0, 0, strings)]
}

/// Go's build information (the Go 1.18+ layout: the version inline after the header).
pub fn go_buildinfo(version: &str) -> Vec<u8> {
    let mut out = b"\xff Go buildinf:".to_vec();
    out.extend([8, 2]);
    out.resize(32, 0);
    out.push(version.len() as u8);
    out.extend(version.as_bytes());
    out.push(0);
    out
}

/// Where the crafted files put their code and their build information.
pub const TEXT: u64 = BASE + 0x1000;
pub const DATA: u64 = BASE + 0x20_0000;
/// An address far from everything else.
pub const FAR: u64 = 0x7000_0000_0000;

// ---- The crafted files ----

/// A Go program (build information) with `segments` loadable segments that each cover
/// the whole file, `data` bytes of read-only data and no Go function table: a search
/// for the table that goes through every segment reads the file `segments` times.
/// 30,000 segments and no data make 1.7 MB.
pub fn pclntab_scan(segments: usize, data: usize) -> Vec<u8> {
    let buildinfo = Section::new(
        ".go.buildinfo",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_WRITE,
        DATA,
        go_buildinfo("go1.21.0"),
    );
    let rodata = Section::new(".rodata", SHT_PROGBITS, SHF_ALLOC, 0, vec![0; data]);
    Elf {
        segments: vec![
            Segment {
                flags: PF_R,
                covers: Covers::File(BASE),
            };
            segments
        ],
        sections: vec![buildinfo, rodata],
        ..Elf::default()
    }
    .build()
}

/// A program of `symbols` function symbols that all bear one of the names looked for:
/// every symbol passes every cheap test and is looked up.
pub fn wanted_symbols(symbols: usize, name: &str) -> Vec<u8> {
    let mut table = vec![0u8; 24];
    let one = symbol(1, STT_FUNC_GLOBAL, 1, TEXT, 1);
    for _ in 0..symbols {
        table.extend(one);
    }
    let mut strings = vec![0];
    strings.extend(name.as_bytes());
    strings.push(0);
    let text = Section::new(
        ".text",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_EXECINSTR,
        TEXT,
        vec![0xcc; 64],
    );
    let mut sections = vec![text];
    sections.extend(symbol_sections(table, strings, 2));
    Elf {
        segments: vec![Segment {
            flags: PF_R | PF_X,
            covers: Covers::Section(0),
        }],
        sections,
        ..Elf::default()
    }
    .build()
}

/// A program with `segments` loadable segments covering the whole file and `symbols`
/// function symbols (none of them a TLS function): turning every symbol's address into
/// a file offset walks every segment. 30,000 x 60,000 make 3.5 MB.
pub fn symbol_walk(segments: usize, symbols: usize) -> Vec<u8> {
    let names: Vec<Vec<u8>> = (0..symbols).map(|i| format!("f{i}").into_bytes()).collect();
    let list: Vec<(&[u8], u64, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (&n[..], TEXT + (i % 4096) as u64, 1))
        .collect();
    let (table, strings) = symbol_table(&list, 1);
    let text = Section::new(
        ".text",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_EXECINSTR,
        TEXT,
        vec![0xcc; 4096],
    );
    let mut sections = vec![text];
    sections.extend(symbol_sections(table, strings, 2));
    // Only the last segment holds the symbols' addresses: a walk meets it last.
    let mut list = vec![
        Segment {
            flags: PF_R | PF_X,
            covers: Covers::File(FAR),
        };
        segments.saturating_sub(1)
    ];
    list.push(Segment {
        flags: PF_R | PF_X,
        covers: Covers::File(BASE),
    });
    Elf {
        segments: list,
        sections,
        ..Elf::default()
    }
    .build()
}

/// x86-64 code that waits for signals forever (`pause` in a loop): what a crafted
/// program runs when it is executed.
const PAUSE_LOOP: [u8; 9] = [0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7];
/// Where the crafted Go function starts, after that code.
pub const GO_FUNC: u64 = TEXT + 16;
pub const GO_READ: &str = "crypto/tls.(*Conn).Read";

/// A Go program whose `crypto/tls.(*Conn).Read` is `len` bytes of `0xc3`: every byte a
/// return instruction. It runs (waiting for a signal) when executed.
pub fn go_returns(len: usize) -> Vec<u8> {
    let mut code = PAUSE_LOOP.to_vec();
    code.resize(16, 0xcc);
    code.resize(16 + len, 0xc3);
    let text = Section::new(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, TEXT, code);
    let buildinfo = Section::new(
        ".go.buildinfo",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_WRITE,
        DATA,
        go_buildinfo("go1.21.0"),
    );
    let (table, strings) = symbol_table(&[(GO_READ.as_bytes(), GO_FUNC, len as u64)], 1);
    let mut sections = vec![text, buildinfo];
    sections.extend(symbol_sections(table, strings, 3));
    let segment = |flags, i| Segment {
        flags,
        covers: Covers::Section(i),
    };
    Elf {
        entry: TEXT,
        segments: vec![segment(PF_R | PF_X, 0), segment(PF_R | PF_W, 1)],
        sections,
        ..Elf::default()
    }
    .build()
}

/// A program whose `symbols` function symbols all name places in one string of `len`
/// bytes without an end but the name of the last symbol, `SSL_read`, after it: reading
/// each name to its end reads the rest of that string.
pub fn long_symbol_names(symbols: usize, len: usize) -> Vec<u8> {
    let mut table = vec![0u8; 24];
    for i in 0..symbols {
        let name = (i * 4099 % len.max(1)) as u32;
        table.extend(symbol(name, STT_FUNC_GLOBAL, 1, TEXT, 1));
    }
    table.extend(symbol(len as u32, STT_FUNC_GLOBAL, 1, TEXT, 1));
    let mut strings = vec![b'S'; len];
    strings.extend(b"SSL_read\0");
    let text = Section::new(
        ".text",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_EXECINSTR,
        TEXT,
        vec![0xcc; 64],
    );
    let mut sections = vec![text];
    sections.extend(symbol_sections(table, strings, 2));
    Elf {
        segments: vec![Segment {
            flags: PF_R | PF_X,
            covers: Covers::Section(0),
        }],
        sections,
        ..Elf::default()
    }
    .build()
}

/// A program with `sections` sections whose names all point into one string of `len`
/// bytes without an end: looking a section up by name reads that string per section.
pub fn long_section_names(sections: usize, len: usize) -> Vec<u8> {
    let section = Section::new("", SHT_PROGBITS, SHF_ALLOC, 0, vec![0; 8]);
    Elf {
        segments: vec![Segment {
            flags: PF_R,
            covers: Covers::File(BASE),
        }],
        sections: vec![section; sections],
        shstrtab: Some(vec![b'.'; len]),
        ..Elf::default()
    }
    .build()
}

// ---- HPACK ----

/// Block A: a dynamic table size update to 65,536, then one 65,472-byte entry
/// (name "x", 65,439 bytes of `v`).
pub fn hpack_block_a() -> Vec<u8> {
    let mut block = vec![
        0x3f, 0xe1, 0xff, 0x03, 0x40, 0x01, b'x', 0x7f, 0xa0, 0xfe, 0x03,
    ];
    block.resize(block.len() + 65_439, 0x76);
    block
}

/// Block B: 65,536 one-byte references to that entry (index 62).
pub fn hpack_block_b() -> Vec<u8> {
    vec![0xbe; 65_536]
}

/// An ordinary request header block of at most `len` bytes: static and dynamic
/// references and literals, as browsers and gRPC clients send.
pub fn hpack_ordinary(len: usize) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x84];
    for i in 0.. {
        let value = format!("value-{i:08}-of-an-ordinary-header");
        let name = format!("x-header-{}", i % 40);
        let mut piece = vec![0x40, name.len() as u8];
        piece.extend(name.as_bytes());
        piece.push(value.len() as u8);
        piece.extend(value.as_bytes());
        piece.extend([0xbe, 0xbf, 0x82]);
        if block.len() + piece.len() > len {
            break;
        }
        block.extend(piece);
    }
    block
}

/// HTTP/2 frame types and flags used here.
pub const HEADERS: u8 = 1;
pub const CONTINUATION: u8 = 9;
pub const END_HEADERS: u8 = 4;
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HTTP/2 client's bytes: the preface, SETTINGS, `blocks` on streams 1, 3, ... in
/// HEADERS and CONTINUATION frames of 16,384 bytes, then a block with the one header
/// `name: value` (a literal without indexing; both under 128 bytes).
pub fn h2_client_stream(blocks: &[Vec<u8>], (name, value): (&str, &str)) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    for (i, block) in blocks.iter().enumerate() {
        out.extend(header_frames(2 * i as u32 + 1, block, 16_384));
    }
    let mut last = vec![0x00, name.len() as u8];
    last.extend(name.as_bytes());
    last.push(value.len() as u8);
    last.extend(value.as_bytes());
    out.extend(frame(
        HEADERS,
        END_HEADERS,
        2 * blocks.len() as u32 + 1,
        &last,
    ));
    out
}

/// A header block on `stream` as a HEADERS frame and CONTINUATION frames of at most
/// `max` bytes each.
pub fn header_frames(stream: u32, block: &[u8], max: usize) -> Vec<u8> {
    let pieces: Vec<&[u8]> = block.chunks(max.max(1)).collect();
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i + 1 == pieces.len() {
            END_HEADERS
        } else {
            0
        };
        out.extend(frame(kind, flags, stream, piece));
    }
    out
}
