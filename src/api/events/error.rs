//! Why a stream could not be opened, and what its client is told.

use crate::api::snapshot::SnapshotError;
use crate::channel::ChannelError;
use crate::fanout::hub::HubError;
use crate::pg::error::StoreError;
use crate::pg::published::ColumnsError;
use crate::refusal::{Refusal, Refuse};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("no channel given: use /{{channel}}/events or /events?channel=a&channel=b")]
    NoChannel,
    #[error("too many channels: {0} given, at most {1} allowed")]
    TooManyChannels(usize, usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Columns(#[from] ColumnsError),
}

impl Refuse for StreamError {
    fn refusal(&self) -> Refusal {
        match self {
            StreamError::NoChannel | StreamError::TooManyChannels(..) => Refusal::Invalid,
            StreamError::Channel(err) => err.refusal(),
            StreamError::Store(err) => err.refusal(),
            StreamError::Hub(err) => err.refusal(),
            StreamError::Snapshot(err) => err.refusal(),
            StreamError::Columns(err) => err.refusal(),
        }
    }

    fn told(&self) -> String {
        match self {
            StreamError::NoChannel | StreamError::TooManyChannels(..) => self.to_string(),
            StreamError::Channel(err) => err.told(),
            StreamError::Store(err) => err.told(),
            StreamError::Hub(err) => err.told(),
            StreamError::Snapshot(err) => err.told(),
            StreamError::Columns(err) => err.told(),
        }
    }
}
