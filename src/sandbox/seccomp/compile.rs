//! Resolved seccomp rules → a classic BPF program.
//!
//! Layout: check the architecture (and, on x86_64, reject the x32 ABI, whose numbers carry
//! bit 30), load the call's number, then a binary search (`JGE`, with an unconditional `JA`
//! over a lower half longer than a short jump reaches) over segments of numbers: a run of
//! consecutive calls with the same rules is one segment, so docker's allow-list costs a few
//! hundred instructions, which keeps the kernel's JIT and every call cheap.
//! A call's rules are tried in order: the first whose argument checks all hold gives its
//! action; none, or a call with no rules, gives the default action. Every path ends in a
//! `RET`, so blocks can be laid out one after another with no jump out of a block.

use std::collections::BTreeMap;

const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

/// x32 system calls are x86_64's with this bit set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The kernel's limit on a filter's length (BPF_MAXINSNS).
pub const MAX_LEN: usize = 4096;

/// One BPF instruction, as `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// A comparison of one 64-bit argument (libseccomp's `SCMP_CMP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Ne(u64),
    Lt(u64),
    Le(u64),
    Eq(u64),
    Ge(u64),
    Gt(u64),
    /// `arg & mask == value`.
    MaskedEq {
        mask: u64,
        value: u64,
    },
}

/// `args[index] <cmp>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub index: u8,
    pub cmp: Cmp,
}

/// All of `conds` hold → the filter returns `action` (a `SECCOMP_RET_*` value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub conds: Vec<Cond>,
    pub action: u32,
}

/// What the compiler needs: the rules per call number of one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub arch: u32,
    pub reject_x32: bool,
    pub default_action: u32,
    /// For calls of another architecture (or x32).
    pub foreign_action: u32,
    pub calls: BTreeMap<u32, Vec<Rule>>,
}

/// Why a filter could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("the seccomp profile compiles to {0} BPF instructions, more than the kernel's 4096")]
    TooLong(usize),
    #[error("argument index {0} in a seccomp rule: system calls have arguments 0 to 5")]
    ArgIndex(u8),
}

/// A jump target while a rule's code is built: relative, or "this rule fails".
#[derive(Clone, Copy)]
enum To {
    Rel(u8),
    Fail,
}

struct Pending {
    code: u16,
    jt: To,
    jf: To,
    k: u32,
}

fn p(code: u16, jt: To, jf: To, k: u32) -> Pending {
    Pending { code, jt, jf, k }
}

/// The checks of one condition: falls through when it holds, jumps to `Fail` when not.
fn cond_code(c: &Cond) -> Result<Vec<Pending>, CompileError> {
    if c.index > 5 {
        return Err(CompileError::ArgIndex(c.index));
    }
    let lo = OFFSET_ARGS + 8 * u32::from(c.index);
    let hi = lo + 4;
    let ld = |off| p(LD_W_ABS, To::Rel(0), To::Rel(0), off);
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    use To::{Fail, Rel};
    Ok(match c.cmp {
        Cmp::Eq(v) => {
            let (vh, vl) = split(v);
            vec![
                ld(hi),
                p(JEQ_K, Rel(0), Fail, vh),
                ld(lo),
                p(JEQ_K, Rel(0), Fail, vl),
            ]
        }
        Cmp::Ne(v) => {
            let (vh, vl) = split(v);
            vec![
                ld(hi),
                p(JEQ_K, Rel(0), Rel(2), vh),
                ld(lo),
                p(JEQ_K, Fail, Rel(0), vl),
            ]
        }
        Cmp::MaskedEq { mask, value } => {
            let ((mh, ml), (dh, dl)) = (split(mask), split(value));
            vec![
                ld(hi),
                p(ALU_AND_K, Rel(0), Rel(0), mh),
                p(JEQ_K, Rel(0), Fail, dh),
                ld(lo),
                p(ALU_AND_K, Rel(0), Rel(0), ml),
                p(JEQ_K, Rel(0), Fail, dl),
            ]
        }
        // High words decide unless equal; then the low words.
        Cmp::Gt(v) | Cmp::Ge(v) => {
            let (vh, vl) = split(v);
            let last = if matches!(c.cmp, Cmp::Gt(_)) {
                JGT_K
            } else {
                JGE_K
            };
            vec![
                ld(hi),
                p(JGT_K, Rel(3), Rel(0), vh),
                p(JEQ_K, Rel(0), Fail, vh),
                ld(lo),
                p(last, Rel(0), Fail, vl),
            ]
        }
        // Lt is "not Ge", Le is "not Gt".
        Cmp::Lt(v) | Cmp::Le(v) => {
            let (vh, vl) = split(v);
            let last = if matches!(c.cmp, Cmp::Le(_)) {
                JGT_K
            } else {
                JGE_K
            };
            vec![
                ld(hi),
                p(JGT_K, Fail, Rel(0), vh),
                p(JEQ_K, Rel(0), Rel(2), vh),
                ld(lo),
                p(last, Fail, Rel(0), vl),
            ]
        }
    })
}

fn resolve(code: Vec<Pending>, fail_at: usize) -> Result<Vec<Insn>, CompileError> {
    let too_long = || CompileError::TooLong(fail_at);
    code.into_iter()
        .enumerate()
        .map(|(i, x)| {
            let off = |t| match t {
                To::Rel(n) => Ok(n),
                To::Fail => u8::try_from(fail_at - i - 1).map_err(|_| too_long()),
            };
            Ok(insn(x.code, off(x.jt)?, off(x.jf)?, x.k))
        })
        .collect()
}

/// One call's rules, ending in the default action.
fn body(rules: &[Rule], default_action: u32) -> Result<Vec<Insn>, CompileError> {
    let mut out = Vec::new();
    for r in rules {
        if r.conds.is_empty() {
            // Later rules can no longer be reached.
            out.push(insn(RET_K, 0, 0, r.action));
            return Ok(out);
        }
        let mut code = Vec::new();
        for c in &r.conds {
            code.extend(cond_code(c)?);
        }
        code.push(p(RET_K, To::Rel(0), To::Rel(0), r.action));
        let len = code.len();
        out.extend(resolve(code, len)?);
    }
    out.push(insn(RET_K, 0, 0, default_action));
    Ok(out)
}

/// `JA` over `n` instructions.
fn ja(n: usize) -> Result<Insn, CompileError> {
    u32::try_from(n)
        .map(|k| insn(JA, 0, 0, k))
        .map_err(|_| CompileError::TooLong(n))
}

/// The numbers from 0 up as segments `(first number, code)`: consecutive numbers with the
/// same code share one (most of an allow-list is runs of allowed calls), gaps get `default`.
fn segments(calls: Vec<(u32, Vec<Insn>)>, default: &[Insn]) -> Vec<(u32, Vec<Insn>)> {
    fn push(out: &mut Vec<(u32, Vec<Insn>)>, start: u32, code: Vec<Insn>) {
        if out.last().is_none_or(|(_, c)| *c != code) {
            out.push((start, code));
        }
    }
    let mut out = Vec::new();
    let mut next = 0u32;
    for (nr, code) in calls {
        if nr > next {
            push(&mut out, next, default.to_vec());
        }
        push(&mut out, nr, code);
        next = nr.saturating_add(1);
    }
    push(&mut out, next, default.to_vec());
    out
}

/// A binary search over `segs` (sorted, covering every number from the first one's start);
/// the accumulator holds the call's number.
fn search(segs: &[(u32, Vec<Insn>)]) -> Result<Vec<Insn>, CompileError> {
    if let [(_, code)] = segs {
        return Ok(code.clone());
    }
    let mid = segs.len() / 2;
    let lower = search(&segs[..mid])?;
    let upper = search(&segs[mid..])?;
    // Upper half: jump over the lower one.
    let mut out = match u8::try_from(lower.len()) {
        Ok(n) => vec![insn(JGE_K, n, 0, segs[mid].0)],
        Err(_) => vec![insn(JGE_K, 0, 1, segs[mid].0), ja(lower.len())?],
    };
    out.extend(lower);
    out.extend(upper);
    Ok(out)
}

/// The whole program.
pub fn compile(f: &Filter) -> Result<Vec<Insn>, CompileError> {
    let mut out = vec![
        insn(LD_W_ABS, 0, 0, OFFSET_ARCH),
        insn(JEQ_K, 1, 0, f.arch),
        insn(RET_K, 0, 0, f.foreign_action),
        insn(LD_W_ABS, 0, 0, OFFSET_NR),
    ];
    if f.reject_x32 {
        out.push(insn(JGE_K, 0, 1, X32_SYSCALL_BIT));
        out.push(insn(RET_K, 0, 0, f.foreign_action));
    }
    let calls = f
        .calls
        .iter()
        .map(|(nr, rules)| Ok((*nr, body(rules, f.default_action)?)))
        .collect::<Result<Vec<_>, CompileError>>()?;
    let default = [insn(RET_K, 0, 0, f.default_action)];
    out.extend(search(&segments(calls, &default))?);
    if out.len() > MAX_LEN {
        return Err(CompileError::TooLong(out.len()));
    }
    Ok(out)
}

/// Runs `program` on one call, as the kernel would (for tests and `nook` checks).
pub fn run(program: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> Option<u32> {
    let word = |off: u32| -> Option<u32> {
        match off {
            OFFSET_NR => Some(nr),
            OFFSET_ARCH => Some(arch),
            o if (OFFSET_ARGS..OFFSET_ARGS + 48).contains(&o) && o.is_multiple_of(4) => {
                let a = args[((o - OFFSET_ARGS) / 8) as usize];
                Some(if (o - OFFSET_ARGS).is_multiple_of(8) {
                    a as u32
                } else {
                    (a >> 32) as u32
                })
            }
            _ => None,
        }
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = program.get(pc)?;
        let jump = |cond: bool| pc + 1 + usize::from(if cond { i.jt } else { i.jf });
        pc = match i.code {
            LD_W_ABS => {
                acc = word(i.k)?;
                pc + 1
            }
            ALU_AND_K => {
                acc &= i.k;
                pc + 1
            }
            JA => pc + 1 + i.k as usize,
            JEQ_K => jump(acc == i.k),
            JGT_K => jump(acc > i.k),
            JGE_K => jump(acc >= i.k),
            RET_K => return Some(i.k),
            _ => return None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: u32 = 0xC000_003E;
    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;
    const ENOSYS: u32 = 0x0005_0026;

    fn filter(calls: &[(u32, Vec<Rule>)]) -> Filter {
        Filter {
            arch: ARCH,
            reject_x32: true,
            default_action: EPERM,
            foreign_action: ENOSYS,
            calls: calls.iter().cloned().collect(),
        }
    }

    fn allow(conds: Vec<Cond>) -> Rule {
        Rule {
            conds,
            action: ALLOW,
        }
    }

    #[test]
    fn a_straight_allow_list_with_a_default() {
        let calls: Vec<(u32, Vec<Rule>)> = (0..400)
            .step_by(3)
            .map(|n| (n, vec![allow(vec![])]))
            .collect();
        let prog = compile(&filter(&calls)).unwrap();
        for nr in 0..420 {
            let want = if nr % 3 == 0 && nr < 400 {
                ALLOW
            } else {
                EPERM
            };
            assert_eq!(run(&prog, ARCH, nr, [0; 6]), Some(want), "call {nr}");
        }
    }

    #[test]
    fn runs_of_calls_with_the_same_rules_share_a_segment() {
        let calls: Vec<(u32, Vec<Rule>)> = (10..300).map(|n| (n, vec![allow(vec![])])).collect();
        let prog = compile(&filter(&calls)).unwrap();
        // Prologue (6), two splits, three segments: below 10, 10..300, from 300.
        assert_eq!(prog.len(), 6 + 2 + 3, "{prog:?}");
        for (nr, want) in [
            (0, EPERM),
            (9, EPERM),
            (10, ALLOW),
            (299, ALLOW),
            (300, EPERM),
        ] {
            assert_eq!(run(&prog, ARCH, nr, [0; 6]), Some(want), "call {nr}");
        }
    }

    #[test]
    fn other_architectures_and_x32_get_the_foreign_action() {
        let prog = compile(&filter(&[(1, vec![allow(vec![])])])).unwrap();
        assert_eq!(run(&prog, 0x4000_0003, 1, [0; 6]), Some(ENOSYS), "i386");
        assert_eq!(
            run(&prog, ARCH, 1 | X32_SYSCALL_BIT, [0; 6]),
            Some(ENOSYS),
            "x32"
        );
        assert_eq!(run(&prog, ARCH, u32::MAX, [0; 6]), Some(ENOSYS));
        assert_eq!(run(&prog, ARCH, 1, [0; 6]), Some(ALLOW));
    }

    fn one(cmp: Cmp, index: u8) -> Vec<Insn> {
        compile(&filter(&[(7, vec![allow(vec![Cond { index, cmp }])])])).unwrap()
    }

    #[test]
    fn comparisons_use_all_64_bits() {
        let big = 0x1_0000_0005u64;
        let cases: &[(Cmp, &[(u64, bool)])] = &[
            (Cmp::Eq(big), &[(big, true), (5, false), (big + 1, false)]),
            (
                Cmp::Ne(big),
                &[(big, false), (5, true), (0x2_0000_0005, true)],
            ),
            (
                Cmp::Gt(big),
                &[
                    (big, false),
                    (big + 1, true),
                    (0x2_0000_0000, true),
                    (u32::MAX as u64, false),
                ],
            ),
            (
                Cmp::Ge(big),
                &[(big, true), (big - 1, false), (0x2_0000_0000, true)],
            ),
            (
                Cmp::Lt(big),
                &[
                    (big, false),
                    (big - 1, true),
                    (u32::MAX as u64, true),
                    (0x2_0000_0000, false),
                ],
            ),
            (Cmp::Le(big), &[(big, true), (big + 1, false), (3, true)]),
            (
                Cmp::MaskedEq {
                    mask: 0x7E02_0000,
                    value: 0,
                },
                &[
                    (0x11, true),
                    (0x1000_0000 | 0x11, false),
                    (0x0002_0000, false),
                    (0xFFFF_FFFF_8000_0000, true),
                ],
            ),
        ];
        for (cmp, values) in cases {
            for index in [0u8, 3, 5] {
                let prog = one(*cmp, index);
                for (v, ok) in values.iter() {
                    let mut args = [0u64; 6];
                    args[usize::from(index)] = *v;
                    let want = if *ok { ALLOW } else { EPERM };
                    assert_eq!(
                        run(&prog, ARCH, 7, args),
                        Some(want),
                        "{cmp:?} arg{index}={v:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn rules_are_ored_and_conditions_anded() {
        let rules = vec![
            allow(vec![
                Cond {
                    index: 0,
                    cmp: Cmp::Eq(1),
                },
                Cond {
                    index: 1,
                    cmp: Cmp::Eq(2),
                },
            ]),
            Rule {
                conds: vec![Cond {
                    index: 0,
                    cmp: Cmp::Eq(9),
                }],
                action: ENOSYS,
            },
        ];
        let prog = compile(&filter(&[(7, rules)])).unwrap();
        let at = |a: u64, b: u64| run(&prog, ARCH, 7, [a, b, 0, 0, 0, 0]);
        assert_eq!(at(1, 2), Some(ALLOW));
        assert_eq!(at(1, 3), Some(EPERM));
        assert_eq!(at(9, 0), Some(ENOSYS));
        assert_eq!(at(0, 2), Some(EPERM));
    }

    #[test]
    fn long_bodies_and_deep_trees_stay_reachable() {
        // 40 conditional rules on each of 300 calls: bodies over 255 instructions.
        let many: Vec<Rule> = (0..40)
            .map(|v| {
                allow(vec![Cond {
                    index: 0,
                    cmp: Cmp::Eq(v),
                }])
            })
            .collect();
        let calls: Vec<(u32, Vec<Rule>)> = (0..3).map(|n| (n * 100, many.clone())).collect();
        let prog = compile(&filter(&calls)).unwrap();
        assert_eq!(run(&prog, ARCH, 200, [39, 0, 0, 0, 0, 0]), Some(ALLOW));
        assert_eq!(run(&prog, ARCH, 200, [40, 0, 0, 0, 0, 0]), Some(EPERM));
        assert_eq!(run(&prog, ARCH, 201, [1, 0, 0, 0, 0, 0]), Some(EPERM));
    }

    #[test]
    fn bad_index_and_too_long_are_errors() {
        let bad = filter(&[(
            1,
            vec![allow(vec![Cond {
                index: 6,
                cmp: Cmp::Eq(0),
            }])],
        )]);
        assert_eq!(compile(&bad), Err(CompileError::ArgIndex(6)));
        let many: Vec<Rule> = (0..200)
            .map(|v| {
                allow(vec![Cond {
                    index: 0,
                    cmp: Cmp::Eq(v),
                }])
            })
            .collect();
        let calls: Vec<(u32, Vec<Rule>)> = (0..5).map(|n| (n * 2, many.clone())).collect();
        assert!(matches!(
            compile(&filter(&calls)),
            Err(CompileError::TooLong(_))
        ));
    }
}
