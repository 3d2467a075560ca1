//! SQL names of column types for the schema files, as PostgreSQL's `format_type` spells them
//! (`numeric(12,2)`, `timestamp(3) with time zone`, `integer[]`).
//!
//! pgoutput describes a column by type OID and modifier only; for types outside the built-in
//! catalog it first sends a Type message with the name, which the caller passes in. Built-in types
//! are named from a table here, so no catalog query is needed on the replication path and the
//! snapshot (which reads the catalog) produces the very same names.

/// Types with an OID below this are built in (PostgreSQL's `FirstGenbkiObjectId`); pgoutput sends
/// a Type message for every other column type.
pub const FIRST_USER_OID: u32 = 10_000;

/// The SQL name of a column type. `user_type` is `(namespace, name)` from a Type message (or the
/// catalog) for types at or above [`FIRST_USER_OID`]; an empty namespace means `pg_catalog`.
pub fn sql_type(oid: u32, typmod: i32, user_type: Option<(&str, &str)>) -> String {
    if let Some((namespace, name)) = user_type {
        if !namespace.is_empty() && namespace != "pg_catalog" {
            return format!("{namespace}.{name}");
        }
        // A domain over a built-in type: pgoutput's Type message names the base type
        // (`int4`), which is spelled like any built-in column of that type.
        return match builtin_oid(name) {
            Some(base) => sql_type(base, typmod, None),
            None => name.to_owned(),
        };
    }
    if let Some(element) = array_element(oid) {
        return format!("{}[]", sql_type(element, typmod, None));
    }
    let with_precision = |base: &str, zone: &str| {
        if typmod >= 0 {
            format!("{base}({typmod}){zone}")
        } else {
            format!("{base}{zone}")
        }
    };
    let length = |base: &str| {
        if typmod >= 4 {
            format!("{base}({})", typmod - 4)
        } else {
            base.to_owned()
        }
    };
    match oid {
        16 => "boolean".into(),
        17 => "bytea".into(),
        18 => "\"char\"".into(),
        19 => "name".into(),
        20 => "bigint".into(),
        21 => "smallint".into(),
        23 => "integer".into(),
        25 => "text".into(),
        26 => "oid".into(),
        114 => "json".into(),
        142 => "xml".into(),
        600 => "point".into(),
        650 => "cidr".into(),
        700 => "real".into(),
        701 => "double precision".into(),
        774 => "macaddr8".into(),
        790 => "money".into(),
        829 => "macaddr".into(),
        869 => "inet".into(),
        1042 => length("character"),
        1043 => length("character varying"),
        1082 => "date".into(),
        1083 => with_precision("time", " without time zone"),
        1114 => with_precision("timestamp", " without time zone"),
        1184 => with_precision("timestamp", " with time zone"),
        1186 => "interval".into(),
        1266 => with_precision("time", " with time zone"),
        1560 => {
            if typmod >= 0 {
                format!("bit({typmod})")
            } else {
                "bit".into()
            }
        }
        1562 => {
            if typmod >= 0 {
                format!("bit varying({typmod})")
            } else {
                "bit varying".into()
            }
        }
        1700 => {
            if typmod >= 4 {
                let packed = typmod - 4;
                let precision = (packed >> 16) & 0xffff;
                // The scale is an 11-bit signed field since PostgreSQL 15 (negative scales).
                let scale = ((packed & 0x7ff) ^ 0x400) - 0x400;
                format!("numeric({precision},{scale})")
            } else {
                "numeric".into()
            }
        }
        2950 => "uuid".into(),
        3220 => "pg_lsn".into(),
        3614 => "tsvector".into(),
        3802 => "jsonb".into(),
        3904 => "int4range".into(),
        3926 => "int8range".into(),
        3906 => "numrange".into(),
        3908 => "tsrange".into(),
        3910 => "tstzrange".into(),
        3912 => "daterange".into(),
        other => format!("oid:{other}"),
    }
}

/// Catalog names (`typname`) of the built-in types [`sql_type`] spells.
const BUILTIN_NAMES: &[(u32, &str)] = &[
    (16, "bool"),
    (17, "bytea"),
    (18, "char"),
    (19, "name"),
    (20, "int8"),
    (21, "int2"),
    (23, "int4"),
    (25, "text"),
    (26, "oid"),
    (114, "json"),
    (142, "xml"),
    (600, "point"),
    (650, "cidr"),
    (700, "float4"),
    (701, "float8"),
    (774, "macaddr8"),
    (790, "money"),
    (829, "macaddr"),
    (869, "inet"),
    (1042, "bpchar"),
    (1043, "varchar"),
    (1082, "date"),
    (1083, "time"),
    (1114, "timestamp"),
    (1184, "timestamptz"),
    (1186, "interval"),
    (1266, "timetz"),
    (1560, "bit"),
    (1562, "varbit"),
    (1700, "numeric"),
    (2950, "uuid"),
    (3220, "pg_lsn"),
    (3614, "tsvector"),
    (3802, "jsonb"),
    (3904, "int4range"),
    (3906, "numrange"),
    (3908, "tsrange"),
    (3910, "tstzrange"),
    (3912, "daterange"),
    (3926, "int8range"),
];

/// The OID of a built-in type from its catalog name (`int4`, `_numeric`).
fn builtin_oid(name: &str) -> Option<u32> {
    if let Some(element) = name.strip_prefix('_') {
        let element = builtin_oid(element)?;
        return ARRAYS.iter().find(|&&(_, e)| e == element).map(|&(a, _)| a);
    }
    BUILTIN_NAMES
        .iter()
        .find(|&&(_, n)| n == name)
        .map(|&(oid, _)| oid)
}

/// Built-in array types and their element types.
const ARRAYS: &[(u32, u32)] = &[
    (1000, 16),
    (1001, 17),
    (1002, 18),
    (1003, 19),
    (1016, 20),
    (1005, 21),
    (1007, 23),
    (1009, 25),
    (1028, 26),
    (199, 114),
    (143, 142),
    (651, 650),
    (1021, 700),
    (1022, 701),
    (775, 774),
    (791, 790),
    (1040, 829),
    (1041, 869),
    (1014, 1042),
    (1015, 1043),
    (1182, 1082),
    (1183, 1083),
    (1115, 1114),
    (1185, 1184),
    (1187, 1186),
    (1270, 1266),
    (1561, 1560),
    (1563, 1562),
    (1231, 1700),
    (2951, 2950),
    (3221, 3220),
    (3807, 3802),
];

/// The element type of a built-in array type.
fn array_element(oid: u32) -> Option<u32> {
    ARRAYS.iter().find(|&&(a, _)| a == oid).map(|&(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_format_type() {
        assert_eq!(sql_type(23, -1, None), "integer");
        assert_eq!(sql_type(1700, (12 << 16) + 2 + 4, None), "numeric(12,2)");
        assert_eq!(sql_type(1700, -1, None), "numeric");
        assert_eq!(sql_type(1043, 24, None), "character varying(20)");
        assert_eq!(sql_type(1184, 3, None), "timestamp(3) with time zone");
        assert_eq!(sql_type(1114, -1, None), "timestamp without time zone");
        assert_eq!(sql_type(1007, -1, None), "integer[]");
        assert_eq!(sql_type(1231, (10 << 16) + 4, None), "numeric(10,0)[]");
        assert_eq!(
            sql_type(16_500, -1, Some(("public", "mood"))),
            "public.mood"
        );
        assert_eq!(sql_type(16_501, -1, Some(("", "x"))), "x");
        // Domains: pgoutput names the base type.
        assert_eq!(sql_type(16_502, -1, Some(("", "int4"))), "integer");
        assert_eq!(sql_type(16_503, -1, Some(("", "_numeric"))), "numeric[]");
        assert_eq!(sql_type(4_242, -1, None), "oid:4242");
    }
}
