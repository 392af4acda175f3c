//! The LISTEN connection itself: polled by the listener's own task, so that a notification is seen the
//! moment it arrives, and every query on it bounded.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{sleep_until, timeout, Instant};
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Connection, Socket};

use super::ListenerError;

/// How a sequencing batch's notification (pgsse.sequence_batch) starts, followed by the batch's last id; a
/// writer's ring has no payload.
const BATCH: &str = "b";

/// Notifications since the listener last looked.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct News {
    /// A writer committed while no step was due: whoever steps should.
    pub(super) rung: bool,
    /// Another session's step moved a batch into the log.
    pub(super) announced: bool,
    /// The highest last id those batches announced (0 when none said): what a standby must hold. Anyone
    /// who knows the channel can announce, so it is a hint to wait for, never trusted past a short wait.
    pub(super) head: i64,
}

impl News {
    fn any(&self) -> bool {
        self.rung || self.announced
    }
}

/// The LISTEN connection, polled by the listener's own task rather than a spawned one: a notification is
/// seen the moment it arrives, and a query's answer wakes no other task on its way back. Never awaited as
/// a future, which would drop notifications.
pub(super) struct ListenConnection {
    pub(super) connection: Connection<Socket, NoTlsStream>,
    /// What arrived since the listener last looked.
    pub(super) news: News,
    /// This session's backend: its own batches are not news.
    pub(super) own_pid: Option<i32>,
    /// Longest wait for any one answer: `--probe-interval`, like the probe's own, so a connection that
    /// froze mid-query is given up within two probe intervals of the fault, as one that froze while idle.
    pub(super) bound: Duration,
}

impl ListenConnection {
    /// Handles everything the connection has ready; `Ready` only when it failed or closed.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) -> Poll<ListenerError> {
        loop {
            match self.connection.poll_message(cx) {
                Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => match n.payload() {
                    payload if payload.starts_with(BATCH) => {
                        if Some(n.process_id()) != self.own_pid {
                            self.news.announced = true;
                            let head = payload[BATCH.len()..].parse().unwrap_or(0);
                            self.news.head = self.news.head.max(head);
                        }
                    }
                    _ => self.news.rung = true,
                },
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(err))) => return Poll::Ready(err.into()),
                Poll::Ready(None) => return Poll::Ready(ListenerError::Closed),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Runs a query of this connection's client to completion while driving the connection.
    pub(super) async fn run<T, E: Into<ListenerError>>(
        &mut self,
        query: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ListenerError> {
        let mut query = pin!(query);
        poll_fn(|cx| {
            if let Poll::Ready(out) = query.as_mut().poll(cx) {
                return Poll::Ready(out.map_err(Into::into));
            }
            if let Poll::Ready(err) = self.drive(cx) {
                return Poll::Ready(Err(err));
            }
            // Driving may have delivered the answer.
            query.as_mut().poll(cx).map_err(Into::into)
        })
        .await
    }

    /// `run`, bounded: a half-open socket must not stall the listener forever.
    pub(super) async fn bounded<T, E: Into<ListenerError>>(
        &mut self,
        query: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ListenerError> {
        let bound = self.bound;
        timeout(bound, self.run(query)).await.map_err(|_| ListenerError::QueryTimeout(bound))?
    }

    /// Drives the connection until a notification has arrived (or one arrived during the last query), or
    /// until `deadline`; [`Self::news`] says which.
    pub(super) async fn notified(&mut self, deadline: Instant) -> Result<(), ListenerError> {
        let mut deadline = pin!(sleep_until(deadline));
        poll_fn(|cx| {
            if let Poll::Ready(err) = self.drive(cx) {
                return Poll::Ready(Err(err));
            }
            if self.news.any() || deadline.as_mut().poll(cx).is_ready() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }
}
