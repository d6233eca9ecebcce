//! Whether a recorded history of one register, read and compare-and-swap by concurrent
//! clients, is linearizable: Wing and Gong's search for an order of the operations that
//! respects real time (an operation that returned before another was invoked comes first)
//! and the register's semantics, with Porcupine's memoization of (operations placed, value)
//! so each configuration is explored once.
//!
//! A compare-and-swap whose outcome is unknown (a timeout, a 504, a broken connection) may
//! have taken effect at any moment after it was invoked, or never: it is given no return
//! time, and the search may place it anywhere after its invocation or leave it out.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// What one operation did, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A read that returned `value`.
    Read {
        /// The value the register held.
        value: String,
    },
    /// Set the register to `new` if it holds `expected`.
    Cas {
        /// The value the register must hold for the swap to apply.
        expected: String,
        /// The value written when it applies.
        new: String,
        /// Whether it applied, as the client learned.
        outcome: CasOutcome,
    },
}

/// How a compare-and-swap ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// Applied: the register held `expected`.
    Ok,
    /// Refused: the register held something else.
    Conflict,
    /// No definite answer: applied or not.
    Unknown,
}

/// One operation with the times its client invoked it and saw it return, measured on one
/// monotonic clock.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Which client ran it; a client's operations do not overlap.
    pub client: usize,
    /// When the client invoked it.
    pub invoked: Duration,
    /// When the client saw it return.
    pub returned: Duration,
    /// What it did.
    pub op: Op,
}

/// What the search found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations fits their times and a register's behaviour.
    Linearizable,
    /// No order fits; says how far the best attempt got and what it could not place.
    NotLinearizable(String),
    /// The search visited more configurations than it was allowed to.
    Undecided {
        /// How many configurations were visited.
        visited: usize,
    },
}

/// Checks `history` against a register starting at `initial`, visiting at most
/// `max_visited` configurations.
pub fn check(initial: &str, history: &[Operation], max_visited: usize) -> Verdict {
    let mut values: HashMap<String, usize> = HashMap::new();
    let mut intern = |v: &str| {
        let next = values.len();
        *values.entry(v.to_string()).or_insert(next)
    };
    let start = intern(initial);
    let ops: Vec<Step> = history
        .iter()
        .map(|operation| Step {
            invoked: operation.invoked,
            // An unknown outcome may take effect at any later time: it never returned.
            returned: match operation.op {
                Op::Cas {
                    outcome: CasOutcome::Unknown,
                    ..
                } => None,
                _ => Some(operation.returned),
            },
            kind: match &operation.op {
                Op::Read { value } => Kind::Read(intern(value)),
                Op::Cas {
                    expected,
                    new,
                    outcome,
                } => Kind::Cas(intern(expected), intern(new), *outcome),
            },
        })
        .collect();
    let mut search = Search {
        ops: &ops,
        seen: HashSet::new(),
        max_visited,
        best: (0, Vec::new()),
    };
    let mut placed = vec![0u64; ops.len().div_ceil(64)];
    match search.explore(&mut placed, 0, start) {
        Some(true) => Verdict::Linearizable,
        Some(false) => {
            let (count, unplaced) = &search.best;
            let unplaced: Vec<String> = unplaced
                .iter()
                .take(8)
                .map(|&i| format!("{:?}", history[i]))
                .collect();
            Verdict::NotLinearizable(format!(
                "at most {count} of {} operations fit in one order; unplaced then: {}",
                ops.len(),
                unplaced.join(", ")
            ))
        }
        None => Verdict::Undecided {
            visited: search.seen.len(),
        },
    }
}

struct Step {
    invoked: Duration,
    returned: Option<Duration>,
    kind: Kind,
}

enum Kind {
    Read(usize),
    Cas(usize, usize, CasOutcome),
}

impl Step {
    /// The register's value after this operation takes effect on `value`, if it can.
    fn apply(&self, value: usize) -> Option<usize> {
        match self.kind {
            Kind::Read(read) => (read == value).then_some(value),
            Kind::Cas(expected, new, CasOutcome::Ok | CasOutcome::Unknown) => {
                (expected == value).then_some(new)
            }
            Kind::Cas(expected, _, CasOutcome::Conflict) => (expected != value).then_some(value),
        }
    }

    fn definite(&self) -> bool {
        self.returned.is_some()
    }
}

struct Search<'a> {
    ops: &'a [Step],
    seen: HashSet<(Vec<u64>, usize)>,
    max_visited: usize,
    /// The most definite operations placed in one attempt, and the ones left then.
    best: (usize, Vec<usize>),
}

impl Search<'_> {
    /// Whether the operations not yet placed can follow, starting from `value`; `None`
    /// when the bound was reached.
    fn explore(&mut self, placed: &mut [u64], count: usize, value: usize) -> Option<bool> {
        let is_placed = |placed: &[u64], i: usize| placed[i / 64] & (1 << (i % 64)) != 0;
        let left: Vec<usize> = (0..self.ops.len()).filter(|&i| !is_placed(placed, i)).collect();
        if left.iter().all(|&i| !self.ops[i].definite()) {
            // Every definite operation is placed; unknown ones left out never took effect.
            return Some(true);
        }
        if !self.seen.insert((placed.to_vec(), value)) {
            return Some(false);
        }
        if self.seen.len() > self.max_visited {
            return None;
        }
        if count >= self.best.0 {
            self.best = (
                count,
                left.iter().copied().filter(|&i| self.ops[i].definite()).collect(),
            );
        }
        // Next can come any operation invoked before every remaining one returned.
        let first_return = left.iter().filter_map(|&i| self.ops[i].returned).min();
        for &i in &left {
            let op = &self.ops[i];
            if first_return.is_some_and(|first| first < op.invoked) {
                continue;
            }
            let Some(after) = op.apply(value) else {
                continue;
            };
            placed[i / 64] |= 1 << (i % 64);
            let fits = self.explore(placed, count + usize::from(op.definite()), after);
            placed[i / 64] &= !(1 << (i % 64));
            match fits {
                Some(false) => {}
                other => return other,
            }
        }
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn read(client: usize, from: u64, to: u64, value: &str) -> Operation {
        Operation {
            client,
            invoked: ms(from),
            returned: ms(to),
            op: Op::Read { value: value.into() },
        }
    }

    fn cas(client: usize, from: u64, to: u64, expected: &str, new: &str, outcome: CasOutcome) -> Operation {
        Operation {
            client,
            invoked: ms(from),
            returned: ms(to),
            op: Op::Cas {
                expected: expected.into(),
                new: new.into(),
                outcome,
            },
        }
    }

    const BOUND: usize = 100_000;

    #[test]
    fn sequential_history_that_follows_the_register_is_linearizable() {
        let history = [
            read(0, 0, 1, "a"),
            cas(0, 2, 3, "a", "b", CasOutcome::Ok),
            read(1, 4, 5, "b"),
            cas(1, 6, 7, "a", "c", CasOutcome::Conflict),
            read(0, 8, 9, "b"),
        ];
        assert_eq!(check("a", &history, BOUND), Verdict::Linearizable);
    }

    #[test]
    fn overlapping_operations_may_take_effect_in_either_order() {
        // The read overlaps the swap, so it may see the old value or the new.
        for seen in ["a", "b"] {
            let history = [cas(0, 0, 10, "a", "b", CasOutcome::Ok), read(1, 1, 9, seen)];
            assert_eq!(check("a", &history, BOUND), Verdict::Linearizable, "{seen}");
        }
        // Two swaps on the same base overlap: one wins, the other conflicts.
        let history = [
            cas(0, 0, 10, "a", "b", CasOutcome::Conflict),
            cas(1, 1, 9, "a", "c", CasOutcome::Ok),
            read(0, 11, 12, "c"),
        ];
        assert_eq!(check("a", &history, BOUND), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_swap_is_not_linearizable() {
        let history = [cas(0, 0, 1, "a", "b", CasOutcome::Ok), read(1, 2, 3, "a")];
        assert!(matches!(check("a", &history, BOUND), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn two_acknowledged_swaps_on_one_base_are_not_linearizable() {
        let history = [
            cas(0, 0, 10, "a", "b", CasOutcome::Ok),
            cas(1, 0, 10, "a", "c", CasOutcome::Ok),
        ];
        assert!(matches!(check("a", &history, BOUND), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn a_conflict_nothing_caused_is_not_linearizable() {
        let history = [
            read(0, 0, 1, "a"),
            cas(0, 2, 3, "a", "b", CasOutcome::Conflict),
            read(1, 4, 5, "a"),
        ];
        assert!(matches!(check("a", &history, BOUND), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn reads_that_go_back_in_time_are_not_linearizable() {
        // Once a read saw the new value, a later read cannot see the old one, even while
        // the swap is still pending.
        let history = [
            cas(0, 0, 100, "a", "b", CasOutcome::Ok),
            read(1, 10, 20, "b"),
            read(2, 30, 40, "a"),
        ];
        assert!(matches!(check("a", &history, BOUND), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn an_unknown_swap_may_take_effect_late_or_never() {
        // Taken effect long after its client gave up on it.
        let late = [
            cas(0, 0, 1, "a", "b", CasOutcome::Unknown),
            read(1, 5, 6, "a"),
            read(1, 7, 8, "b"),
        ];
        assert_eq!(check("a", &late, BOUND), Verdict::Linearizable);
        // Never taken effect.
        let never = [cas(0, 0, 1, "a", "b", CasOutcome::Unknown), read(1, 5, 6, "a")];
        assert_eq!(check("a", &never, BOUND), Verdict::Linearizable);
        // But not before it was invoked, and not twice.
        let early = [read(1, 0, 1, "b"), cas(0, 2, 3, "a", "b", CasOutcome::Unknown)];
        assert!(matches!(check("a", &early, BOUND), Verdict::NotLinearizable(_)));
        let twice = [
            cas(0, 0, 1, "a", "b", CasOutcome::Unknown),
            read(1, 2, 3, "b"),
            cas(1, 4, 5, "b", "a", CasOutcome::Ok),
            read(1, 6, 7, "a"),
            read(1, 8, 9, "b"),
        ];
        assert!(matches!(check("a", &twice, BOUND), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn the_search_stops_at_its_bound() {
        // Many overlapping reads of values no swap wrote: every order is tried and fails.
        let mut history: Vec<Operation> = (0..20).map(|i| read(i, 0, 100, "a")).collect();
        history.push(read(20, 0, 100, "z"));
        assert!(matches!(check("a", &history, 50), Verdict::Undecided { .. }));
    }
}
