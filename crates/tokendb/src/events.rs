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
    pub(crate) fn subscribe(&self, capacity: usize) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        if let Ok(mut s) = self.subscribers.lock() {
            s.push(tx);
        }
        rx
    }

    pub(crate) fn emit(&self, event: Event) {
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
