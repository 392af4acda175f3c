//! What the store knows of channels: which names exist (cached), whether one has a table, its published
//! columns, and whether a filter's values fit their columns' types.

use std::collections::HashSet;

use super::{ChannelInfo, Store};
use crate::pg::error::StoreError;

impl Store {
    /// Returns the names among `channels` that are not registered. Known names are cached: a channel
    /// that disappears later only keeps an idle stream open, while a new one is seen at once.
    pub async fn unknown_channels(&self, channels: &[String]) -> Result<Vec<String>, StoreError> {
        let missing: Vec<String> = {
            let known = self.known_channels.lock().unwrap_or_else(|p| p.into_inner());
            channels.iter().filter(|c| !known.contains(*c)).cloned().collect()
        };
        if missing.is_empty() {
            return Ok(missing);
        }
        // Boxed, like the head's read: every stream opening holds this future, and a query's is 2 KB.
        Box::pin(self.look_up_channels(missing)).await
    }

    async fn look_up_channels(&self, missing: Vec<String>) -> Result<Vec<String>, StoreError> {
        self.with(async |client| {
            let stmt = client.prepare_cached("SELECT name FROM pgsse.channels WHERE name = ANY($1)").await?;
            let found: HashSet<String> = client.query(&stmt, &[&missing]).await?.iter().map(|r| r.get(0)).collect();
            let mut known = self.known_channels.lock().unwrap_or_else(|p| p.into_inner());
            known.extend(found.iter().cloned());
            Ok(missing.into_iter().filter(|c| !found.contains(c)).collect())
        })
        .await
    }

    pub async fn channel(&self, name: &str) -> Result<Option<ChannelInfo>, StoreError> {
        self.with(async |client| {
            let stmt =
                client.prepare_cached("SELECT source_table IS NOT NULL FROM pgsse.channels WHERE name = $1").await?;
            Ok(client.query_opt(&stmt, &[&name]).await?.map(|row| ChannelInfo { has_table: row.get(0) }))
        })
        .await
    }

    /// The names under which a table channel's events carry its published columns; `None` for a channel
    /// without a table (or none of that name).
    pub async fn published_columns(&self, channel: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.with(async |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT ARRAY(SELECT s.key FROM pgsse.snapshot_columns(c) s) FROM pgsse.channels c \
                     WHERE c.name = $1 AND c.source_table IS NOT NULL",
                )
                .await?;
            Ok(client.query_opt(&stmt, &[&channel]).await?.map(|row| row.get(0)))
        })
        .await
    }

    /// Refuses (as `Rejected`) a filter whose value its column's type cannot take: see
    /// `pgsse.filter_check`.
    pub async fn filter_check(&self, channel: &str, filters: &serde_json::Value) -> Result<(), StoreError> {
        self.with(async |client| {
            let stmt = client.prepare_cached("SELECT pgsse.filter_check($1, $2::text::jsonb)").await?;
            client.execute(&stmt, &[&channel, &filters.to_string()]).await.map_err(StoreError::from_db)?;
            Ok(())
        })
        .await
    }
}
