//! What the stream never says about the publication's tables, read from the catalog now and
//! then: which tables it publishes (a table that joined is copied, one that left is forgotten,
//! so joining again copies it again), and the partitions of a table published through its root
//! (`publish_via_partition_root`), whose `ATTACH`, `DETACH`, `DROP` and `TRUNCATE` change the
//! root's rows without a single row message. pgoutput's own Relation messages cannot tell: it
//! sends them for partitions of a root too, and only with a change.
//!
//! A partition set that changed makes the root's copy start again: a new `B` row, whose `E`
//! replaces every earlier row of the root (README, "The file format"), so an attached
//! partition's rows arrive and a detached or truncated one's leave. A partition that appears
//! empty (`CREATE TABLE … PARTITION OF`, a partition made ahead of time) changes nothing and
//! costs nothing. The partitions last seen are kept in the checkpoint, so a change made while
//! pgcdc was stopped or reconnecting is seen too. [`changed_roots`] is the rule, pure; [`watch`]
//! the polling task.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::debug;

use crate::checkpoint::PartitionLeaf as Leaf;
use crate::config::SourceConfig;
use crate::source::slot::in_list;

/// How often the catalog is read: the longest a table that joined the publication waits for
/// its copy to begin, and a changed partition set for the root's.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The publication's tables as the catalog shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every published table, by folder.
    pub tables: BTreeSet<String>,
    /// The leaves of each partitioned table published through its root.
    pub partitions: BTreeMap<String, Vec<Leaf>>,
}

/// Roots whose rows changed with their partition set between two reads: a leaf gone (detached
/// or dropped), a leaf with another heap file (truncated or rewritten) or attached again, or a
/// leaf that appeared holding data (attached). A root seen for the first time has nothing to
/// compare with.
pub fn changed_roots(before: &BTreeMap<String, Vec<Leaf>>, now: &Snapshot) -> Vec<String> {
    now.partitions
        .iter()
        .filter_map(|(root, leaves)| {
            let old = before.get(root)?;
            let gone_or_rewritten = old.iter().any(|leaf| {
                leaves.iter().find(|l| l.oid == leaf.oid).is_none_or(|l| {
                    l.filenode != leaf.filenode || l.attached_by != leaf.attached_by
                })
            });
            let arrived_full = leaves
                .iter()
                .any(|leaf| !leaf.empty && !old.iter().any(|l| l.oid == leaf.oid));
            (gone_or_rewritten || arrived_full).then(|| root.clone())
        })
        .collect()
}

/// Reads the publication's tables and their partitions.
pub async fn read(
    client: &tokio_postgres::Client,
    source: &SourceConfig,
) -> Result<Snapshot, tokio_postgres::Error> {
    let pubs = in_list(&source.publications);
    // Leaves as `oid:filenode:empty:attached_by`, one string per root: one round trip whatever
    // the count.
    let rows = client
        .simple_query(&format!(
            "SELECT DISTINCT pt.schemaname || '.' || pt.tablename AS folder,
                    CASE WHEN c.relkind = 'p' THEN
                        (SELECT string_agg(t.relid::oid::text || ':'
                                || coalesce(pg_catalog.pg_relation_filenode(t.relid)::text, '')
                                || ':' || (pg_catalog.pg_relation_size(t.relid) = 0)::text
                                || ':' || coalesce((SELECT i.xmin::text FROM pg_catalog.pg_inherits i
                                                    WHERE i.inhrelid = t.relid), ''), ',')
                         FROM pg_catalog.pg_partition_tree(c.oid) t WHERE t.isleaf)
                    END AS leaves
             FROM pg_catalog.pg_publication_tables pt
             JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
             WHERE pt.pubname IN ({pubs})"
        ))
        .await?;
    let mut snapshot = Snapshot::default();
    for row in rows {
        let tokio_postgres::SimpleQueryMessage::Row(row) = row else {
            continue;
        };
        let Some(folder) = row.get(0) else { continue };
        snapshot.tables.insert(folder.to_owned());
        if let Some(leaves) = row.get(1) {
            let mut leaves: Vec<Leaf> = leaves.split(',').filter_map(parse_leaf).collect();
            leaves.sort();
            snapshot.partitions.insert(folder.to_owned(), leaves);
        }
    }
    Ok(snapshot)
}

fn parse_leaf(text: &str) -> Option<Leaf> {
    let mut parts = text.split(':');
    let oid = parts.next()?.parse().ok()?;
    let filenode = parts.next()?.parse().ok();
    let empty = parts.next()? == "true";
    let attached_by = parts.next().and_then(|x| x.parse().ok());
    Some(Leaf {
        oid,
        filenode,
        empty,
        attached_by,
    })
}

/// Reads the catalog every [`POLL_INTERVAL`] and sends what it saw, until the pipeline goes
/// away. Comparing is the pipeline's job ([`changed_roots`] against the checkpoint), so nothing
/// seen is lost with this task. A failed read is logged and tried again at the next tick: the
/// stream, not this watch, owns the connection's health.
pub async fn watch(source: SourceConfig, sender: mpsc::UnboundedSender<Snapshot>) {
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    loop {
        ticks.tick().await;
        if client.is_none() {
            match crate::source::sql_connect(&source).await {
                Ok((c, connection)) => {
                    tokio::spawn(connection);
                    client = Some(c);
                }
                Err(e) => {
                    debug!(error = %e, "Cannot read the publication's tables now; trying again");
                    continue;
                }
            }
        }
        let Some(c) = client.as_ref() else { continue };
        match read(c, &source).await {
            Ok(now) => {
                if sender.send(now).is_err() {
                    return;
                }
            }
            Err(e) => {
                debug!(error = %e, "Cannot read the publication's tables now; trying again");
                client = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(oid: u32, filenode: u32, empty: bool) -> Leaf {
        Leaf {
            oid,
            filenode: Some(filenode),
            empty,
            attached_by: Some(700),
        }
    }

    fn snapshot(leaves: Vec<Leaf>) -> Snapshot {
        Snapshot {
            tables: BTreeSet::from(["public.root".to_owned()]),
            partitions: BTreeMap::from([("public.root".to_owned(), leaves)]),
        }
    }

    #[test]
    fn partition_changes_that_move_rows_name_the_root() {
        let before = snapshot(vec![leaf(1, 10, false), leaf(2, 20, false)]).partitions;
        let same = snapshot(vec![leaf(1, 10, false), leaf(2, 20, true)]);
        assert!(changed_roots(&before, &same).is_empty());
        let detached = snapshot(vec![leaf(1, 10, false)]);
        assert_eq!(changed_roots(&before, &detached), ["public.root"]);
        let truncated = snapshot(vec![leaf(1, 10, false), leaf(2, 21, true)]);
        assert_eq!(changed_roots(&before, &truncated), ["public.root"]);
        let attached = snapshot(vec![
            leaf(1, 10, false),
            leaf(2, 20, false),
            leaf(3, 30, false),
        ]);
        assert_eq!(changed_roots(&before, &attached), ["public.root"]);
        let mut reattached = snapshot(vec![leaf(1, 10, false), leaf(2, 20, false)]);
        reattached.partitions.get_mut("public.root").unwrap()[1].attached_by = Some(900);
        assert_eq!(changed_roots(&before, &reattached), ["public.root"]);
    }

    #[test]
    fn an_empty_new_partition_or_a_first_sight_changes_nothing() {
        let before = snapshot(vec![leaf(1, 10, false)]);
        let created = snapshot(vec![leaf(1, 10, false), leaf(2, 20, true)]);
        assert!(changed_roots(&before.partitions, &created).is_empty());
        assert!(changed_roots(&BTreeMap::new(), &before).is_empty());
    }

    #[test]
    fn leaves_parse_from_the_catalog_text() {
        assert_eq!(
            parse_leaf("16401:16401:false:700"),
            Some(leaf(16401, 16401, false))
        );
        assert_eq!(
            parse_leaf("7::true:"),
            Some(Leaf {
                oid: 7,
                filenode: None,
                empty: true,
                attached_by: None,
            })
        );
        assert_eq!(parse_leaf("x"), None);
    }
}
