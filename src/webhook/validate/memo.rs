//! Remembered cron verdicts. `croner` needs about 50 µs to parse one expression (measured in a
//! release build), twenty times the rest of a review, and a cluster uses few distinct
//! expressions, so each verdict is computed once. The memo is bounded by the bytes it holds,
//! not by its number of entries: a verdict quotes its expression, so entries differ in size by
//! a factor of a hundred, and a count alone does not bound memory.

use std::collections::HashMap;

use crate::crd::common::MAX_CRON_LENGTH;

/// Expressions longer than this (in bytes) are parsed every time and never kept: the schema
/// refuses them, so no object that is stored repeats them.
pub const MAX_KEY_BYTES: usize = MAX_CRON_LENGTH;

/// What the process-wide memo may hold, in bytes: thousands of typical entries, and at least
/// a few hundred of the largest.
pub const BUDGET_BYTES: usize = 1 << 20;

/// Bytes charged per entry beyond its strings: the map slot (two `String` headers and a
/// control byte) and allocator rounding.
const ENTRY_OVERHEAD: usize = 64;

/// Verdicts by expression (`None`: valid), with the bytes they hold.
#[derive(Debug)]
pub struct CronMemo {
    verdicts: HashMap<String, Option<String>>,
    bytes: usize,
    budget: usize,
}

fn cost(expression: &str, verdict: &Option<String>) -> usize {
    expression.len() + verdict.as_ref().map_or(0, String::len) + ENTRY_OVERHEAD
}

impl CronMemo {
    /// An empty memo that holds at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            verdicts: HashMap::new(),
            bytes: 0,
            budget,
        }
    }

    /// The remembered verdict, if there is one.
    pub fn get(&self, expression: &str) -> Option<&Option<String>> {
        self.verdicts.get(expression)
    }

    /// Remembers a verdict. An expression over [`MAX_KEY_BYTES`] is not kept; when the entry
    /// would not fit, the memo starts over (clusters reuse few expressions, so they return
    /// within one review each).
    pub fn insert(&mut self, expression: &str, verdict: Option<String>) {
        if expression.len() > MAX_KEY_BYTES {
            return;
        }
        let added = cost(expression, &verdict);
        if added > self.budget {
            return;
        }
        if let Some(old) = self.verdicts.remove(expression) {
            self.bytes -= cost(expression, &old);
        }
        if self.bytes + added > self.budget {
            self.verdicts.clear();
            self.verdicts.shrink_to_fit();
            self.bytes = 0;
        }
        self.verdicts.insert(expression.to_string(), verdict);
        self.bytes += added;
    }

    /// The bytes the entries hold, as charged against the budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many verdicts are remembered.
    pub fn len(&self) -> usize {
        self.verdicts.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_fed_large_unique_expressions_stays_within_its_budget() {
        let mut memo = CronMemo::new(64 * 1024);
        for i in 0..10_000 {
            // Just under the key limit, with a verdict that quotes it twice.
            let expression = format!("{i:0>250}");
            let verdict = format!("invalid cron expression {expression:?}: {expression:?}");
            memo.insert(&expression, Some(verdict));
            assert!(memo.bytes() <= 64 * 1024, "{} bytes", memo.bytes());
        }
        assert!(!memo.is_empty());
    }

    #[test]
    fn memo_does_not_keep_expressions_over_the_schema_limit() {
        let mut memo = CronMemo::new(BUDGET_BYTES);
        let long = "1".repeat(MAX_KEY_BYTES + 1);
        memo.insert(&long, Some("too long".into()));
        assert!(memo.get(&long).is_none());
        assert_eq!(memo.bytes(), 0);
    }

    #[test]
    fn memo_counts_a_replaced_entry_once() {
        let mut memo = CronMemo::new(BUDGET_BYTES);
        memo.insert("@daily", None);
        memo.insert("@daily", None);
        assert_eq!(memo.len(), 1);
        assert_eq!(memo.bytes(), "@daily".len() + ENTRY_OVERHEAD);
        assert_eq!(memo.get("@daily"), Some(&None));
    }
}
