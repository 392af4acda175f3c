//! The Mercure hub's reads and writes of the log: publishing an update, finding where a subscriber's last
//! event id was, and which channels carry updates.

use super::Store;
use crate::fanout::update::{TableTopic, CHANNEL};
use crate::pg::error::StoreError;
use crate::pg::logrow::ISSUED_HEAD;

/// The updates of one publisher id a resume reads at a time, looking for one its subscriber may see.
pub const SAME_ID: i64 = 16;

/// An update as the hub's POST (or any publisher) gives it.
pub struct NewUpdate<'a> {
    pub topics: &'a [String],
    pub data: &'a str,
    pub private: bool,
    pub id: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub retry: Option<u64>,
}

impl Store {
    /// Publishes `update` and answers with its log id once it is in the log.
    pub async fn publish_update(&self, update: &NewUpdate<'_>) -> Result<i64, StoreError> {
        self.with(async |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT txid::text::int8, after FROM pgsse.mercure_publish($1::text[], $2, $3, $4, $5, $6)",
                )
                .await?;
            let retry = update.retry.map(|r| i64::try_from(r).unwrap_or(i64::MAX));
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&update.topics, &update.data, &update.private, &update.id, &update.kind, &retry];
            let row = client.query_one(&stmt, &params).await.map_err(StoreError::from_db)?;
            let written =
                super::writes::sequenced(client, row.try_get(0)?, row.try_get(1)?, CHANNEL, self.sequenced_wait())
                    .await?;
            written.id.ok_or(StoreError::NotSequenced)
        })
        .await
    }

    /// The updates below log id `before` whose publisher gave them `id`, newest first, at most [`SAME_ID`],
    /// each with where it goes (its topics and whether it is private): ids need not be unique, so the
    /// caller pages through them for the newest its subscriber may see. The materialized read is planned
    /// on its own, an equality that only `events_mercure_id` serves, whatever the statistics say, and
    /// reads ids alone; the rows of the newest are read after, by key.
    pub async fn updates_with_id(&self, id: &str, before: i64) -> Result<Vec<(i64, Vec<String>, bool)>, StoreError> {
        self.with_reads(async |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "WITH found AS MATERIALIZED (SELECT id FROM pgsse.events \
                       WHERE channel = '{CHANNEL}' AND (payload ->> 'id') = $1 AND id <= {ISSUED_HEAD} AND id < $2) \
                     SELECT e.id, CASE WHEN jsonb_typeof(e.payload -> 'topics') = 'array' \
                              THEN ARRAY(SELECT jsonb_array_elements_text(e.payload -> 'topics')) ELSE '{{}}' END, \
                            CASE WHEN jsonb_typeof(e.payload -> 'private') = 'boolean' \
                              THEN (e.payload ->> 'private')::boolean ELSE true END \
                     FROM (SELECT id FROM found ORDER BY id DESC LIMIT {SAME_ID}) f \
                     JOIN pgsse.events e ON e.id = f.id ORDER BY e.id DESC"
                ))
                .await?;
            let mut found = Vec::new();
            for row in client.query(&stmt, &[&id, &before]).await? {
                found.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
            Ok(found)
        })
        .await
    }

    /// The channels whose events are updates: the hub's own, and each table channel with a topic.
    pub async fn update_channels(&self) -> Result<Vec<(String, Option<TableTopic>)>, StoreError> {
        self.with_reads(async |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT name, mercure_topic, mercure_public FROM pgsse.channels \
                     WHERE name = '{CHANNEL}' OR mercure_topic IS NOT NULL ORDER BY name"
                ))
                .await?;
            let rows = client.query(&stmt, &[]).await?;
            let mut channels = Vec::with_capacity(rows.len());
            for row in rows {
                let topic = row
                    .try_get::<_, Option<String>>(1)?
                    .map(|template| Ok::<_, tokio_postgres::Error>(TableTopic { template, public: row.try_get(2)? }))
                    .transpose()?;
                channels.push((row.try_get(0)?, topic));
            }
            Ok(channels)
        })
        .await
    }
}

impl Store {
    /// Every id at or below this may be missing from a stream of `channels` (see `pgsse.watermark`).
    pub async fn watermark(&self, channels: &[String]) -> Result<i64, StoreError> {
        self.with_reads(async |client| {
            let stmt = client.prepare_cached("SELECT pgsse.watermark($1)").await?;
            Ok(client.query_one(&stmt, &[&channels]).await?.try_get(0)?)
        })
        .await
    }
}
