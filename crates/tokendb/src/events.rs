//! Event fan-out: one bounded channel per subscriber, `try_send` only, so a slow or absent
//! subscriber never blocks a rotation.

use crate::types::Event;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct EventBus {
    subscribers: Mutex<Vec<Sender<Event>>>,
    pub(crate) dropped: AtomicU64,
}

impl EventBus {
    pub(crate) fn subscribe(&self, capacity: usize) -> EventReceiver {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        if let Ok(mut s) = self.subscribers.lock() {
            s.push(tx);
        }
        EventReceiver(rx)
    }

    pub(crate) fn emit(&self, event: Event) {
        match &event {
            Event::ReuseDetected { tokens_revoked, .. } => {
                metrics::counter!("tokendb_reuse_detected_total").increment(1);
                metrics::counter!("tokendb_access_tokens_revoked_total").increment(*tokens_revoked);
            }
            Event::FamilyRevoked { reason, .. } => {
                metrics::counter!("tokendb_families_revoked_total", "reason" => reason.name())
                    .increment(1);
            }
            Event::ClientMismatch { .. } => {
                metrics::counter!("tokendb_client_mismatch_total").increment(1);
            }
            Event::ConfirmationMismatch { tokens_revoked, .. } => {
                metrics::counter!("tokendb_confirmation_mismatch_total").increment(1);
                metrics::counter!("tokendb_access_tokens_revoked_total").increment(*tokens_revoked);
            }
            Event::Expired { .. } => {}
        }
        let Ok(mut subs) = self.subscribers.lock() else {
            return;
        };
        subs.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

/// A subscription to [`Event`]s, from [`crate::TokenDb::subscribe`]: a bounded queue of its
/// own. Dropping it unsubscribes.
#[derive(Debug)]
pub struct EventReceiver(Receiver<Event>);

/// Why [`EventReceiver::recv`] or its timed forms returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing arrived in time (or, for `try_recv`, nothing was queued).
    Empty,
    /// The database was dropped: no event will come.
    Disconnected,
}

impl core::fmt::Display for RecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Empty => "no event queued",
            Self::Disconnected => "the database was dropped",
        })
    }
}

impl std::error::Error for RecvError {}

impl EventReceiver {
    /// Waits for the next event.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] once the database is gone and the queue is empty.
    pub fn recv(&self) -> Result<Event, RecvError> {
        self.0.recv().map_err(|_| RecvError::Disconnected)
    }

    /// The next event if one is queued.
    ///
    /// # Errors
    /// [`RecvError::Empty`], [`RecvError::Disconnected`].
    pub fn try_recv(&self) -> Result<Event, RecvError> {
        self.0.try_recv().map_err(|e| match e {
            crossbeam_channel::TryRecvError::Empty => RecvError::Empty,
            crossbeam_channel::TryRecvError::Disconnected => RecvError::Disconnected,
        })
    }

    /// Waits at most `timeout` for the next event.
    ///
    /// # Errors
    /// [`RecvError::Empty`] on timeout, [`RecvError::Disconnected`].
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Result<Event, RecvError> {
        self.0.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => RecvError::Empty,
            crossbeam_channel::RecvTimeoutError::Disconnected => RecvError::Disconnected,
        })
    }

    /// Waits until `deadline` at most for the next event.
    ///
    /// # Errors
    /// As [`EventReceiver::recv_timeout`].
    pub fn recv_deadline(&self, deadline: std::time::Instant) -> Result<Event, RecvError> {
        self.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    }

    /// The events queued now, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.0.try_iter()
    }

    /// Events queued now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no event is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
