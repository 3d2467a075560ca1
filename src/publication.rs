//! What the publications publish, table by table: the rule that nothing leaves the database
//! that the publication does not publish.
//!
//! pgoutput applies a publication's column lists and row filters to the stream by itself; the
//! copies pgcdc makes of existing rows (first start, `slot reset`, tables added later) must apply
//! the same projection, or a column a team left out (an email, an SSN) lands in the snapshot
//! files. PostgreSQL's own initial copy (the tablesync worker) combines several publications of
//! one subscription by fixed rules, and pgcdc follows them:
//! - one table has one column list: every publication that publishes it must publish the same
//!   columns (a publication without a list publishes them all), or PostgreSQL refuses to stream
//!   it, and so does pgcdc;
//! - row filters are OR-ed; a publication that publishes the table without a filter (including
//!   `FOR ALL TABLES` and `FOR TABLES IN SCHEMA`) admits every row;
//! - the copy ignores the `publish` actions (as tablesync does).
//!
//! This module is pure: the catalog rows come from [`crate::snapshot`] and [`crate::check`].

use std::collections::BTreeSet;
use std::fmt;

/// The publication names of `source.publication`, as START_REPLICATION's `publication_names`
/// takes them: one or more, comma-separated in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publications(Vec<String>);

impl Publications {
    /// Parses `a` or `a, b`: each name 1–63 bytes, no duplicates.
    pub fn parse(text: &str) -> Result<Publications, String> {
        let mut names = Vec::new();
        for name in text.split(',').map(str::trim) {
            if name.is_empty() || name.len() > 63 || name.contains('\0') {
                return Err(
                    "must be one publication name of 1-63 bytes, or several separated by commas"
                        .to_owned(),
                );
            }
            if names.iter().any(|n| n == name) {
                return Err(format!("names publication {name:?} twice"));
            }
            names.push(name.to_owned());
        }
        Ok(Publications(names))
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// The first name, the one the error messages and SQL hints use when there is only one.
    pub fn first(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }
}

impl fmt::Display for Publications {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// One row of `pg_publication_tables`: how one publication publishes one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub publication: String,
    /// The published columns (`attnames`, PostgreSQL 15+); `None` before 15, where a
    /// publication always publishes every non-generated column.
    pub columns: Option<Vec<String>>,
    /// The row filter as `pg_get_expr` prints it; `None` when every row is published.
    pub row_filter: Option<String>,
}

/// What the copy of one table must read: the published columns and the rows the filters admit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// `None`: every column the server publishes by default (PostgreSQL 13 and 14).
    pub columns: Option<BTreeSet<String>>,
    /// The combined row filter, ready for a `WHERE`; `None` when every row is published.
    pub row_filter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    #[error(
        "table {table} is published with different column lists by publications {first} and {second}; PostgreSQL refuses to stream such a table, and pgcdc refuses to copy it: give it the same column list in every publication of source.publication"
    )]
    ColumnListsDiffer {
        table: String,
        first: String,
        second: String,
    },
    #[error("table {table} is in none of the publications {publications}")]
    NotPublished { table: String, publications: String },
}

/// Combines the publications that publish `table` by PostgreSQL's rules (see the module doc).
pub fn combine(table: &str, entries: &[Entry]) -> Result<Projection, ProjectionError> {
    let Some(first) = entries.first() else {
        return Err(ProjectionError::NotPublished {
            table: table.to_owned(),
            publications: String::new(),
        });
    };
    let as_set = |e: &Entry| -> Option<BTreeSet<String>> {
        e.columns.as_ref().map(|c| c.iter().cloned().collect())
    };
    let columns = as_set(first);
    if let Some(other) = entries.iter().find(|e| as_set(e) != columns) {
        return Err(ProjectionError::ColumnListsDiffer {
            table: table.to_owned(),
            first: first.publication.clone(),
            second: other.publication.clone(),
        });
    }
    let row_filter = if entries.iter().any(|e| e.row_filter.is_none()) {
        None
    } else {
        let filters: BTreeSet<&str> = entries
            .iter()
            .filter_map(|e| e.row_filter.as_deref())
            .collect();
        Some(match filters.len() {
            1 => filters.iter().map(|f| (*f).to_owned()).collect(),
            _ => filters
                .iter()
                .map(|f| format!("({f})"))
                .collect::<Vec<_>>()
                .join(" or "),
        })
    };
    Ok(Projection {
        columns,
        row_filter,
    })
}

/// The `COPY … TO STDOUT` statement that reads the projection of `table` (already quoted as
/// `schema.name`) with `columns` (already quoted, in relation order).
///
/// The plain `COPY table (columns)` form is the fastest; a query is needed for a row filter, for
/// generated columns (COPY refuses them in its column list) and for a partitioned table published
/// through its root (COPY reads those only through a query). Only the partitioned root is read
/// with its children: an inheritance parent is published without them (each child is a
/// publication table of its own), hence `ONLY`.
pub fn copy_statement(
    table: &str,
    columns: &[String],
    row_filter: Option<&str>,
    partitioned: bool,
    has_generated: bool,
) -> String {
    let list = columns.join(", ");
    if row_filter.is_none() && !partitioned && !has_generated {
        return format!("copy {table} ({list}) to stdout");
    }
    let only = if partitioned { "" } else { "only " };
    let filter = row_filter.map_or(String::new(), |f| format!(" where {f}"));
    format!("copy (select {list} from {only}{table}{filter}) to stdout")
}

/// The attribute numbers a row filter reads, from its stored node tree (`pg_publication_rel.prqual`
/// as text). A row filter may only reference the table's own columns, each a `VAR` node.
pub fn row_filter_attnums(node_tree: &str) -> BTreeSet<i16> {
    const VARATTNO: &str = ":varattno ";
    let mut found = BTreeSet::new();
    let mut rest = node_tree;
    while let Some(at) = rest.find(VARATTNO) {
        rest = &rest[at + VARATTNO.len()..];
        let digits: &str = &rest[..rest
            .find(|c: char| !c.is_ascii_digit() && c != '-')
            .unwrap_or(rest.len())];
        if let Ok(n) = digits.parse::<i16>()
            && n > 0
        {
            found.insert(n);
        }
    }
    found
}

/// The columns a row filter reads that the replica identity does not carry; `identity` is `None`
/// for REPLICA IDENTITY FULL, which carries them all. PostgreSQL evaluates the filter of an
/// UPDATE or DELETE on the old row's identity columns, so it rejects both when this is not empty.
pub fn outside_identity(filter: &BTreeSet<i16>, identity: Option<&[i16]>) -> Vec<i16> {
    match identity {
        None => Vec::new(),
        Some(key) => filter
            .iter()
            .filter(|n| !key.contains(n))
            .copied()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(publication: &str, columns: Option<&[&str]>, filter: Option<&str>) -> Entry {
        Entry {
            publication: publication.into(),
            columns: columns.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            row_filter: filter.map(str::to_owned),
        }
    }

    #[test]
    fn publication_names_are_one_or_several() {
        let one = Publications::parse("pgcdc_pub").unwrap();
        assert_eq!(one.names(), ["pgcdc_pub"]);
        let two = Publications::parse(" a , b").unwrap();
        assert_eq!(two.names(), ["a", "b"]);
        assert_eq!(two.to_string(), "a, b");
        assert!(Publications::parse("").is_err());
        assert!(Publications::parse("a,,b").is_err());
        assert!(Publications::parse("a,a").is_err());
        assert!(Publications::parse(&"x".repeat(64)).is_err());
    }

    #[test]
    fn filters_are_or_ed_and_an_unfiltered_publication_admits_every_row() {
        let eu = entry("p1", Some(&["id", "region"]), Some("(region = 'EU'::text)"));
        let us = entry("p2", Some(&["region", "id"]), Some("(region = 'US'::text)"));
        let both = combine("public.orders", &[eu.clone(), us.clone()]).unwrap();
        assert_eq!(
            both.row_filter.as_deref(),
            Some("((region = 'EU'::text)) or ((region = 'US'::text))")
        );
        assert_eq!(
            both.columns,
            Some(["id", "region"].iter().map(|s| (*s).to_owned()).collect())
        );
        let same_twice = combine("public.orders", &[eu.clone(), eu.clone()]).unwrap();
        assert_eq!(
            same_twice.row_filter.as_deref(),
            Some("(region = 'EU'::text)")
        );
        let unfiltered = entry("all", Some(&["id", "region"]), None);
        assert_eq!(
            combine("public.orders", &[eu, unfiltered])
                .unwrap()
                .row_filter,
            None
        );
    }

    #[test]
    fn different_column_lists_are_refused_as_postgresql_does() {
        let narrow = entry("p1", Some(&["id", "name"]), None);
        let wide = entry("p2", Some(&["id", "name", "ssn"]), None);
        let err = combine("public.customers", &[narrow, wide]).unwrap_err();
        assert!(err.to_string().contains("p1 and p2"), "{err}");
        assert!(matches!(
            combine("public.t", &[]),
            Err(ProjectionError::NotPublished { .. })
        ));
    }

    #[test]
    fn before_postgresql_15_every_column_and_row() {
        let p = combine(
            "public.t",
            &[entry("p", None, None), entry("q", None, None)],
        )
        .unwrap();
        assert_eq!(
            p,
            Projection {
                columns: None,
                row_filter: None
            }
        );
    }

    #[test]
    fn copy_statement_uses_a_query_only_when_it_must() {
        let cols = ["\"id\"".to_owned(), "\"name\"".to_owned()];
        assert_eq!(
            copy_statement("\"public\".\"t\"", &cols, None, false, false),
            "copy \"public\".\"t\" (\"id\", \"name\") to stdout"
        );
        assert_eq!(
            copy_statement("\"public\".\"t\"", &cols, Some("(id > 5)"), false, false),
            "copy (select \"id\", \"name\" from only \"public\".\"t\" where (id > 5)) to stdout"
        );
        assert_eq!(
            copy_statement("\"public\".\"p\"", &cols, None, true, false),
            "copy (select \"id\", \"name\" from \"public\".\"p\") to stdout"
        );
        assert_eq!(
            copy_statement("\"public\".\"g\"", &cols, None, false, true),
            "copy (select \"id\", \"name\" from only \"public\".\"g\") to stdout"
        );
    }

    #[test]
    fn row_filter_columns_come_from_the_node_tree() {
        // `region = 'EU' and amount > 10` as PostgreSQL 15 stores it (abridged).
        let tree = "{BOOLEXPR :boolop and :args ({OPEXPR :opno 98 :opfuncid 67 :args ({VAR \
                    :varno 1 :varattno 2 :vartype 25 :vartypmod -1 :varlevelsup 0 :varnosyn 1 \
                    :varattnosyn 2 :location 50} {CONST :consttype 25}) :location 57} {OPEXPR \
                    :args ({VAR :varno 1 :varattno 3 :vartype 1700 :varattnosyn 3} {CONST}) \
                    :location 80}) :location 70}";
        assert_eq!(row_filter_attnums(tree), BTreeSet::from([2, 3]));
        assert!(row_filter_attnums("{CONST :consttype 16}").is_empty());
    }

    #[test]
    fn filter_columns_outside_the_identity() {
        let filter = BTreeSet::from([2, 3]);
        assert_eq!(outside_identity(&filter, Some(&[1])), vec![2, 3]);
        assert_eq!(outside_identity(&filter, Some(&[1, 2])), vec![3]);
        assert!(outside_identity(&filter, Some(&[3, 2])).is_empty());
        assert!(
            outside_identity(&filter, None).is_empty(),
            "FULL carries every column"
        );
        assert_eq!(outside_identity(&filter, Some(&[])), vec![2, 3]);
    }
}
