//! The database server's clock, as every replica reads it.

use crate::Shared;
use crate::conn::store_error;
use crate::sql;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokendb_backend::Result;
use tokendb_core::time::{Clock, SystemClock};

/// The database server's clock as seen from this replica: its local clock plus the offset to
/// the server's `clock_timestamp()`, measured at open and every
/// [`crate::PgOptions::clock_refresh`] (the midpoint of the query's round trip is taken as the
/// moment the server read its clock, so the error is at most half a round trip).
///
/// Why the server's: deadlines are absolute times shared by every replica. If each replica
/// used its own clock, a replica running 30 s fast would refuse tokens 30 s early, and a slow
/// one would accept expired ones. With this clock every replica decides by one time.
#[derive(Debug)]
pub struct DatabaseClock {
    local: Option<Arc<dyn Clock>>,
    offset: AtomicI64,
}

impl DatabaseClock {
    pub(crate) fn new(local: Option<Arc<dyn Clock>>) -> Self {
        Self {
            local,
            offset: AtomicI64::new(0),
        }
    }

    fn local_ms(&self) -> u64 {
        match &self.local {
            Some(c) => c.now_ms(),
            None => SystemClock.now_ms(),
        }
    }

    /// The last measured offset of the server's clock from the local one, in ms.
    #[must_use]
    pub fn offset_ms(&self) -> i64 {
        self.offset.load(Ordering::Acquire)
    }

    pub(crate) fn measure(&self, shared: &Shared) -> Result<()> {
        let mut conn = shared.readers.get().map_err(store_error)?;
        let before = self.local_ms();
        let row = conn.query_one(sql::NOW_MS, &[]);
        let after = self.local_ms();
        let server: i64 = row.map_err(store_error)?.get(0);
        drop(conn);
        let mid = i128::from(before) + (i128::from(after) - i128::from(before)) / 2;
        let offset = i64::try_from(i128::from(server) - mid).unwrap_or(0);
        self.offset.store(offset, Ordering::Release);
        Ok(())
    }

    /// Re-measures every `clock_refresh` until the store closes. A failed measurement keeps
    /// the last offset (the server is unreachable: writes fail anyway).
    pub(crate) fn keep_measuring(&self, shared: &Shared) {
        let step = Duration::from_millis(100);
        let mut last = Instant::now();
        while !shared.closed.load(Ordering::Acquire) {
            std::thread::sleep(step);
            if last.elapsed() >= shared.options.clock_refresh {
                let _ = self.measure(shared);
                last = Instant::now();
            }
        }
    }
}

impl Clock for DatabaseClock {
    fn now_ms(&self) -> u64 {
        let t = self.local_ms();
        let o = self.offset_ms();
        if o >= 0 {
            t.saturating_add(o.unsigned_abs())
        } else {
            t.saturating_sub(o.unsigned_abs())
        }
    }
}
