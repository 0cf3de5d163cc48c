//! The lookup connections: at most `max` open, idle ones reused, a caller waiting when every
//! one is busy (rather than opening a connection per lookup under a burst).

use crate::conn::Conn;
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// Idle connections with the thread that last used each.
    idle: Vec<(Conn, std::thread::ThreadId)>,
    open: usize,
    closed: bool,
    /// Callers waiting for a connection: a returned one wakes one of them (and only then is
    /// the condition variable signalled: a wake is a system call).
    waiting: usize,
}

/// A bounded pool of connections to one database.
pub(crate) struct Pool {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// A connection taken from the pool; returned when dropped (or closed, if it broke or was
/// discarded).
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    discard: bool,
}

impl Pool {
    pub(crate) fn new(
        config: postgres::Config,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
        max: usize,
        first: Conn,
    ) -> Self {
        Self {
            config,
            tls,
            max: max.max(1),
            state: Mutex::new(State {
                idle: vec![(first, std::thread::current().id())],
                open: 1,
                closed: false,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle connection, a new one if fewer than `max` are open, or the next one returned.
    pub(crate) fn get(&self) -> Result<Lease<'_>, postgres::Error> {
        let mut state = self.lock();
        let me = std::thread::current().id();
        loop {
            // The connection this thread used last, if idle: its client's runtime and socket
            // state are warm in this thread's cache.
            if let Some(i) = state.idle.iter().rposition(|(_, t)| *t == me) {
                let last = state.idle.len() - 1;
                state.idle.swap(i, last);
            }
            while let Some((conn, _)) = state.idle.pop() {
                if conn.is_closed() {
                    state.open = state.open.saturating_sub(1);
                    continue;
                }
                return Ok(Lease {
                    pool: self,
                    conn: Some(conn),
                    discard: false,
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match Conn::connect(&self.config, &self.tls) {
                    Ok(conn) => Ok(Lease {
                        pool: self,
                        conn: Some(conn),
                        discard: false,
                    }),
                    Err(e) => {
                        let mut state = self.lock();
                        state.open -= 1;
                        let wake = state.waiting > 0;
                        drop(state);
                        if wake {
                            self.freed.notify_one();
                        }
                        Err(e)
                    }
                };
            }
            state.waiting += 1;
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.waiting -= 1;
        }
    }

    /// Closes the idle connections; those leased are closed when returned.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let n = state.idle.len();
        state.idle.clear();
        state.open = state.open.saturating_sub(n);
    }
}

impl Lease<'_> {
    /// The connection is not returned to the pool (it broke mid-statement, say).
    pub(crate) fn discard(&mut self) {
        self.discard = true;
    }
}

impl std::ops::Deref for Lease<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        // Some until dropped.
        self.conn.as_ref().unwrap_or_else(|| unreachable_conn())
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        match self.conn.as_mut() {
            Some(c) => c,
            None => unreachable_conn(),
        }
    }
}

#[allow(clippy::panic)] // a lease holds its connection until dropped: this cannot run
fn unreachable_conn() -> ! {
    panic!("a lease used after its connection was returned")
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut state = self.pool.lock();
        if self.discard || conn.is_closed() || state.closed {
            state.open = state.open.saturating_sub(1);
        } else {
            state.idle.push((conn, std::thread::current().id()));
        }
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.pool.freed.notify_one();
        }
    }
}
