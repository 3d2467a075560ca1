//! A tuple's values as the fields of a change row: text normalised per type, NULL kept apart
//! from an unchanged TOAST value, which comes from the old tuple when REPLICA IDENTITY FULL sent
//! one.

use super::{ChangesError, Field, Table, normalise};
use crate::pgoutput::{Tuple, TupleData};

pub(super) fn fields(
    table: &Table,
    kind: &'static str,
    tuple: &Tuple,
    old: Option<&Tuple>,
) -> Result<Vec<Field>, ChangesError> {
    let values = tuple.columns();
    if values.len() != table.columns.len() {
        return Err(ChangesError::ColumnCount {
            table: table.to_string(),
            kind,
            got: values.len(),
            expected: table.columns.len(),
        });
    }
    values
        .iter()
        .zip(&table.columns)
        .enumerate()
        .map(|(i, (value, column))| match value {
            TupleData::Null => Ok(Field::Null),
            TupleData::Text(bytes) => Ok(Field::Text(normalise::value(
                column.type_oid,
                bytes.clone(),
            ))),
            TupleData::UnchangedToast => match old.and_then(|t| t.columns().get(i)) {
                Some(TupleData::Text(bytes)) => Ok(Field::Text(normalise::value(
                    column.type_oid,
                    bytes.clone(),
                ))),
                _ => Ok(Field::Unchanged),
            },
            TupleData::Binary(_) => Err(ChangesError::BinaryValue {
                table: table.to_string(),
                column: column.name.clone(),
            }),
        })
        .collect()
}
