//! The profile as a classic-BPF seccomp program: a binary search over call numbers.
//!
//! Why not a linear chain, as `seccompiler` emits: when a filter is installed, the kernel runs
//! it once for every call number of the architecture to learn which calls it may allow without
//! running it again (its per-filter action cache). With a chain of a few hundred calls that is
//! ~450 walks of ~800 instructions, 0.8 ms at every dyno start, measured in `dyno bench start`
//! (+15 % of a start); a search tree walks ~10 comparisons per call. At run time the tree is
//! also shorter for every call the cache cannot answer (those with argument checks).
//!
//! Shape: check the architecture; load the call number; `JGE` down a balanced tree of ranges of
//! numbers that share a verdict; at a leaf, return the verdict or check the call's argument.

use std::collections::BTreeMap;

/// One BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Classic BPF opcodes (linux/bpf_common.h): class | size or operation | source.
const BPF_LD: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_ABS: u16 = 0x20;
const BPF_K: u16 = 0x00;
/// `BPF_LD | BPF_W | BPF_ABS` (BPF_W is 0).
pub const LD_W_ABS: u16 = BPF_LD | BPF_ABS;
pub const JMP_JA: u16 = BPF_JMP;
pub const JMP_JEQ_K: u16 = BPF_JMP | 0x10 | BPF_K;
pub const JMP_JGE_K: u16 = BPF_JMP | 0x30 | BPF_K;
pub const JMP_JSET_K: u16 = BPF_JMP | 0x40 | BPF_K;
pub const RET_K: u16 = BPF_RET | BPF_K;

/// Offsets in `struct seccomp_data`.
pub const DATA_NR: u32 = 0;
pub const DATA_ARCH: u32 = 4;
/// The low 32 bits of argument `i` (little-endian: the low word comes first).
pub fn data_arg_low(i: u8) -> u32 {
    16 + 8 * u32::from(i)
}
pub fn data_arg_high(i: u8) -> u32 {
    data_arg_low(i) + 4
}

/// What the program does with one call number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Return this action (`SECCOMP_RET_*` with its data).
    Return(u32),
    /// Allowed when argument `arg`'s low 32 bits are one of `values`.
    ArgIn { arg: u8, values: Vec<u32> },
    /// Allowed when argument `arg` has none of the bits of `mask` (all 64 bits checked).
    ArgClear { arg: u8, mask: u64 },
}

/// Builds the program: `verdicts` for the numbers they name, `otherwise` for every other
/// number (and for calls of another architecture than `arch`). Denied conditional calls also
/// get `otherwise`.
pub fn program(arch: u32, verdicts: &BTreeMap<u32, Verdict>, otherwise: u32) -> Vec<Insn> {
    let ranges = ranges(verdicts, otherwise);
    let mut out = vec![
        stmt(LD_W_ABS, DATA_ARCH),
        jump(JMP_JEQ_K, arch, 1, 0),
        stmt(RET_K, otherwise),
        stmt(LD_W_ABS, DATA_NR),
    ];
    tree(&ranges, otherwise, &mut out);
    out
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// A run of numbers `[from, next range's from)` with one verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    from: u32,
    verdict: Verdict,
}

/// The number line cut into runs: every number from 0 up has exactly one; past the highest
/// number `verdicts` names, everything is `otherwise`.
fn ranges(verdicts: &BTreeMap<u32, Verdict>, otherwise: u32) -> Vec<Range> {
    let default = Verdict::Return(otherwise);
    let end = verdicts.keys().next_back().map_or(0, |last| last + 1);
    let mut out: Vec<Range> = Vec::new();
    for nr in 0..=end {
        let verdict = verdicts.get(&nr).unwrap_or(&default);
        if out.last().is_none_or(|last| last.verdict != *verdict) {
            out.push(Range {
                from: nr,
                verdict: verdict.clone(),
            });
        }
    }
    out
}

/// Emits the search over `ranges` (the number is in the accumulator).
fn tree(ranges: &[Range], otherwise: u32, out: &mut Vec<Insn>) {
    if let [only] = ranges {
        leaf(&only.verdict, otherwise, out);
        return;
    }
    let mid = ranges.len() / 2;
    // `JGE from → right` as `JGE from, 0, 1; JA right`: a JA reaches any distance, a
    // conditional jump only 255 instructions.
    out.push(jump(JMP_JGE_K, ranges[mid].from, 0, 1));
    let ja = out.len();
    out.push(stmt(JMP_JA, 0));
    tree(&ranges[..mid], otherwise, out);
    out[ja].k = (out.len() - ja - 1) as u32;
    tree(&ranges[mid..], otherwise, out);
}

fn leaf(verdict: &Verdict, otherwise: u32, out: &mut Vec<Insn>) {
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    match verdict {
        Verdict::Return(action) => out.push(stmt(RET_K, *action)),
        Verdict::ArgIn { arg, values } => {
            // JEQ v → the ALLOW after the n comparisons and the deny.
            out.push(stmt(LD_W_ABS, data_arg_low(*arg)));
            let n = values.len();
            for (i, value) in values.iter().enumerate() {
                out.push(jump(JMP_JEQ_K, *value, (n - i) as u8, 0));
            }
            out.push(stmt(RET_K, otherwise));
            out.push(stmt(RET_K, ALLOW));
        }
        Verdict::ArgClear { arg, mask } => {
            let (low, high) = (*mask as u32, (*mask >> 32) as u32);
            out.push(stmt(LD_W_ABS, data_arg_low(*arg)));
            if high == 0 {
                out.push(jump(JMP_JSET_K, low, 1, 0));
            } else {
                out.push(jump(JMP_JSET_K, low, 3, 0));
                out.push(stmt(LD_W_ABS, data_arg_high(*arg)));
                out.push(jump(JMP_JSET_K, high, 1, 0));
            }
            out.push(stmt(RET_K, ALLOW));
            out.push(stmt(RET_K, otherwise));
        }
    }
}

/// Runs `program` on a call as the kernel would (for tests): the action it returns.
pub fn run(program: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let load = |offset: u32| -> u32 {
        match offset {
            DATA_NR => nr,
            DATA_ARCH => arch,
            o if (16..64).contains(&o) => {
                let arg = args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            o => panic!("load of offset {o}"),
        }
    };
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let insn = program[pc];
        pc += 1;
        match insn.code {
            LD_W_ABS => acc = load(insn.k),
            RET_K => return insn.k,
            JMP_JA => pc += insn.k as usize,
            JMP_JEQ_K | JMP_JGE_K | JMP_JSET_K => {
                let taken = match insn.code {
                    JMP_JEQ_K => acc == insn.k,
                    JMP_JGE_K => acc >= insn.k,
                    _ => acc & insn.k != 0,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            code => panic!("opcode {code:#x}"),
        }
    }
}
