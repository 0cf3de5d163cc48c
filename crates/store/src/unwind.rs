//! Keeping redb's destructors from running while a panic unwinds: on a damaged file they can
//! panic again, which aborts the process.

use crate::error::{RedbResult, Result};
use redb::Table;

/// Holds a value that is dropped normally, except while the thread unwinds from a panic: then
/// it is leaked (see [`Tx::open`]).
pub(crate) struct LeakOnUnwind<T>(Option<T>);

impl<T> LeakOnUnwind<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(Some(value))
    }

    pub(crate) fn take(mut self) -> Option<T> {
        self.0.take()
    }

    pub(crate) fn get_mut(&mut self) -> Option<&mut T> {
        self.0.as_mut()
    }
}

impl<T> Drop for LeakOnUnwind<T> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(value) = self.0.take()
        {
            std::mem::forget(value);
        }
    }
}

/// Deletes the first `limit` entries keyed below `end`, in key order, calling `each` on every one
/// deleted; returns how many. redb's draining iterator, leaf after leaf, finishes its work in
/// `Drop`, which on a damaged page would panic again while unwinding (an abort): if a step
/// panics, the iterator is leaked instead, and the writer leaks the transaction and fails the
/// store.
pub(crate) fn drain_below<const N: usize, V: redb::Value + 'static>(
    table: &mut Table<'_, &'static [u8; N], V>,
    end: &[u8; N],
    limit: usize,
    mut each: impl FnMut(&[u8; N], V::SelfType<'_>),
) -> Result<usize> {
    if limit == 0 {
        return Ok(0);
    }
    let mut n = 0usize;
    let mut drain = LeakOnUnwind::new(table.extract_if(..end, |_, _| true).db()?);
    while n < limit {
        let Some(item) = drain.get_mut().and_then(Iterator::next) else {
            break;
        };
        let (k, v) = item.db()?;
        each(k.value(), v.value());
        n += 1;
    }
    Ok(n)
}
