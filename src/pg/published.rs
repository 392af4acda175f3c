//! The columns a table channel publishes (under the names its events carry), cached briefly: a filter key
//! that names none of them is a typo, refused rather than left to match nothing forever.

use crate::refusal::{Refusal, Refuse};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::filter::Filter;
use crate::pg::error::StoreError;
use crate::pg::store::Store;

/// How long a channel's columns are trusted: an `ALTER TABLE` shows within this.
const FRESH: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ColumnsError {
    #[error("filter {key:?} names no published column of channel {channel:?} (its columns: {})", columns.join(", "))]
    Unknown { key: String, channel: String, columns: Arc<[String]> },
    /// A filter value its column's type cannot take (pgsse.filter_check's words).
    #[error("{0}")]
    Type(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Channel → when read, and its columns (`None`: a channel without a table, whose events are free-form).
type Cache = HashMap<String, (Instant, Option<Arc<[String]>>)>;

#[derive(Default)]
pub struct Published {
    cache: Mutex<Cache>,
}

impl Published {
    /// Refuses a filter on a table channel whose key does not start with a published column.
    pub async fn check(&self, store: &Store, channel: &str, filter: &Filter) -> Result<(), ColumnsError> {
        if filter.is_empty() {
            return Ok(());
        }
        let Some(columns) = self.columns(store, channel).await? else { return Ok(()) };
        if let Some(key) = filter.keys().find(|key| !columns.iter().any(|c| c == key)) {
            return Err(ColumnsError::Unknown { key: key.to_string(), channel: channel.to_string(), columns });
        }
        // Only a filter on a nested key is left to the events: a column's own value is checked as the
        // snapshot checks it, so the filter means one thing everywhere.
        store.filter_check(channel, &filter.to_sql_json()).await.map_err(|err| match err {
            StoreError::Rejected { message, .. } => ColumnsError::Type(message),
            err => ColumnsError::Store(err),
        })
    }

    async fn columns(&self, store: &Store, channel: &str) -> Result<Option<Arc<[String]>>, StoreError> {
        if let Some((read, columns)) = self.lock().get(channel) {
            if read.elapsed() < FRESH {
                return Ok(columns.clone());
            }
        }
        let columns: Option<Arc<[String]>> = store.published_columns(channel).await?.map(Into::into);
        let mut cache = self.lock();
        cache.retain(|_, (read, _)| read.elapsed() < FRESH);
        cache.insert(channel.to_string(), (Instant::now(), columns.clone()));
        Ok(columns)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Refuse for ColumnsError {
    fn refusal(&self) -> Refusal {
        match self {
            ColumnsError::Unknown { .. } | ColumnsError::Type(_) => Refusal::Invalid,
            ColumnsError::Store(err) => err.refusal(),
        }
    }

    fn told(&self) -> String {
        match self {
            ColumnsError::Store(err) => err.told(),
            err => err.to_string(),
        }
    }
}
