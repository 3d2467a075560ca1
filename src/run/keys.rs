//! The primary keys of `REPLICA IDENTITY FULL` tables, read from the catalog when their
//! Relation message arrives.
//!
//! pgoutput flags every column of a FULL table as key, so neither its flags nor its old tuples
//! (whole rows, sent with every update) say whether an update changed the key. pgcdc keys such a
//! table by its primary key ([`crate::changes::use_primary_key`]), the key its copy's schema file
//! names too ([`crate::snapshot::primary_key`]). Relation messages are rare (once per table per
//! connection, and after DDL), so the pipeline thread asks on one kept connection and waits for
//! the answer (one indexed catalog read) before it applies the message: every change after it
//! needs the key.
//!
//! The catalog is read now, not as of the message's position: a primary key added or dropped
//! since that position applies to the changes before it too (see the README's "Limits").

use std::time::Duration;

use tokio::runtime::Handle;
use tracing::{debug, info};

use super::error::RunError;
use crate::changes::use_primary_key;
use crate::config::SourceConfig;
use crate::pgoutput::{Message, ReplicaIdentity};

/// How long one look-up (with a connect, if the kept connection is gone) may hold the pipeline
/// before pgcdc gives up and reconnects the stream, which sends the Relation again.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KeyLookupError {
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
}

/// A SQL connection kept for the look-ups, opened at the first FULL table.
pub(super) struct PrimaryKeys {
    source: SourceConfig,
    handle: Handle,
    client: Option<tokio_postgres::Client>,
}

impl PrimaryKeys {
    pub fn new(source: &SourceConfig, handle: &Handle) -> PrimaryKeys {
        PrimaryKeys {
            source: source.clone(),
            handle: handle.clone(),
            client: None,
        }
    }

    /// Flags the primary key of a FULL table's Relation message as its key; leaves every other
    /// message as it is.
    pub fn resolve(&mut self, message: &mut Message) -> Result<(), RunError> {
        let Message::Relation(relation) = message else {
            return Ok(());
        };
        if relation.replica_identity != ReplicaIdentity::Full {
            return Ok(());
        }
        let table = format!("{}.{}", relation.namespace, relation.name);
        let key = self
            .lookup(relation.id)
            .map_err(|source| RunError::PrimaryKey {
                table: table.clone(),
                source,
            })?;
        if use_primary_key(relation, &key) {
            debug!(%table, key = ?key, "REPLICA IDENTITY FULL table keyed by its primary key");
        } else {
            info!(%table, "REPLICA IDENTITY FULL table without a primary key: keyed by every column, so an update that changes any value is written as a delete of the old row and the new row");
        }
        Ok(())
    }

    fn lookup(&mut self, relid: u32) -> Result<Vec<String>, KeyLookupError> {
        let handle = self.handle.clone();
        handle.block_on(async {
            tokio::time::timeout(LOOKUP_TIMEOUT, async {
                let client = match self.client.take() {
                    Some(client) if !client.is_closed() => client,
                    _ => {
                        let (client, connection) = crate::source::sql_connect(&self.source).await?;
                        // Ends when the client is dropped.
                        tokio::spawn(connection);
                        client
                    }
                };
                let key = crate::snapshot::primary_key(&client, relid).await?;
                self.client = Some(client);
                Ok(key)
            })
            .await
            .map_err(|_| KeyLookupError::Timeout(LOOKUP_TIMEOUT))?
        })
    }
}
