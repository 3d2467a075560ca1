//! Whether a chunk's rows belong to the copy as it is now planned.
//!
//! A copy's plan names heap blocks of one heap file. A rewrite (`VACUUM FULL`, `CLUSTER`,
//! `TRUNCATE`, a rewriting `ALTER TABLE`, pg_repack) moves every row into a new file, where the
//! same block numbers hold other rows, and logical decoding sends nothing for it: the chunks not
//! read yet would miss the rows moved into blocks already read. Each chunk therefore reports
//! the file its read saw; one that differs from the plan's starts the copy over, with a new plan
//! and a new `B` row. Chunks of the abandoned plan still on their way are dropped.

use super::Part;
use crate::checkpoint::CopyPlan;

/// What to do with a chunk's rows when its high watermark arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Generation {
    /// Read under the current plan, from the plan's file.
    Current,
    /// Read under a plan the copy has since given up: drop the rows.
    Stale,
    /// Read under the current plan from another file: the table was rewritten, start over.
    Rewritten,
}

/// Judges chunk `part`, read under `read_plan` from heap file `read_file`, while the copy's
/// current plan is `current` (`None` while it is being planned again).
pub(super) fn judge(
    current: Option<&CopyPlan>,
    read_plan: &CopyPlan,
    part: &Part,
    read_file: Option<u32>,
) -> Generation {
    if current != Some(read_plan) {
        return Generation::Stale;
    }
    // Keys are read from the table itself, by value: its own heap, none for a root.
    let planned = match part {
        Part::Range(index) => read_plan.span(*index).filenode,
        Part::Keys(_) => read_plan.filenode,
    };
    match (planned, read_file) {
        (Some(planned), Some(read)) if planned == read => Generation::Current,
        // Nothing to compare (no heap file: a root's key reads, or a root without partitions).
        (None, None) => Generation::Current,
        // A plan made before pgcdc recorded the file cannot be trusted either.
        _ => Generation::Rewritten,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::LeafPlan;

    fn plan(filenode: Option<u32>) -> CopyPlan {
        CopyPlan {
            blocks: 10,
            chunk_blocks: 2,
            rows_estimated: 100,
            filenode,
            leaves: None,
        }
    }

    const FIRST: Part = Part::Range(0);

    #[test]
    fn a_chunk_of_the_plans_file_is_current() {
        let p = plan(Some(7));
        assert_eq!(judge(Some(&p), &p, &FIRST, Some(7)), Generation::Current);
        let keys = Part::Keys(Arc::new(vec![vec!["1".to_owned()]]));
        assert_eq!(judge(Some(&p), &p, &keys, Some(7)), Generation::Current);
    }

    #[test]
    fn a_chunk_of_another_file_means_the_table_was_rewritten() {
        let p = plan(Some(7));
        assert_eq!(judge(Some(&p), &p, &FIRST, Some(8)), Generation::Rewritten);
        // A plan from a pgcdc that did not record the file is planned again.
        let old = plan(None);
        assert_eq!(
            judge(Some(&old), &old, &FIRST, Some(8)),
            Generation::Rewritten
        );
    }

    #[test]
    fn a_roots_chunk_is_judged_by_its_leafs_file() {
        let leaf = |name: &str, filenode| LeafPlan {
            schema: "public".into(),
            name: name.into(),
            blocks: 2,
            filenode: Some(filenode),
        };
        let root = CopyPlan {
            blocks: 0,
            filenode: None,
            leaves: Some(vec![leaf("a", 7), leaf("b", 9)]),
            ..plan(None)
        };
        let second = Part::Range(1);
        assert_eq!(
            judge(Some(&root), &root, &second, Some(9)),
            Generation::Current
        );
        assert_eq!(
            judge(Some(&root), &root, &second, Some(7)),
            Generation::Rewritten
        );
        // Keys are read through the root, which has no heap of its own.
        let keys = Part::Keys(Arc::new(Vec::new()));
        assert_eq!(judge(Some(&root), &root, &keys, None), Generation::Current);
    }

    #[test]
    fn chunks_of_an_abandoned_plan_are_stale_whatever_they_read() {
        let old = plan(Some(7));
        let new = plan(Some(8));
        assert_eq!(judge(Some(&new), &old, &FIRST, Some(8)), Generation::Stale);
        assert_eq!(judge(Some(&new), &old, &FIRST, Some(7)), Generation::Stale);
        // Being planned again: nothing read before is wanted.
        assert_eq!(judge(None, &old, &FIRST, Some(7)), Generation::Stale);
    }
}
