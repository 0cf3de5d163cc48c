//! Completion of writes: a backend answers each write through a [`Done`], exactly once, from
//! whichever thread finishes it (the redb backend's writer thread, say); the caller holds the
//! matching [`Pending`], which it can `.await` on any executor or [`Pending::wait`] for on a
//! plain thread. One machinery for both APIs: the synchronous one is `Pending::wait`.

use crate::error::{Failure, StoreError};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// Where a write's time went, as its backend measured it: reported with its answer, for the
/// engine's spans and metrics. Zero where a backend does not measure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    /// From submission until its transaction began (waiting behind other batches).
    pub queue_wait: Duration,
    /// The durable commit of the transaction it was in.
    pub commit: Duration,
    /// Writes in that transaction (group commit), this one included.
    pub batch: usize,
}

impl Timing {
    /// A timing. For backend implementations.
    #[must_use]
    pub fn new(queue_wait: Duration, commit: Duration, batch: usize) -> Self {
        Self {
            queue_wait,
            commit,
            batch,
        }
    }
}

/// Where a backend delivers the result of one write. Completing it runs the caller's
/// continuation (on the completing thread: it must be short and must not block) and wakes the
/// matching [`Pending`]. A `Done` dropped without being completed answers
/// `StoreError::Failed(Failure::WriterStopped)`, so no caller ever waits forever.
pub struct Done<T: Send + 'static> {
    deliver: Option<Deliver<T>>,
}

/// What completing a [`Done`] runs.
type Deliver<T> = Box<dyn FnOnce(Result<T, StoreError>, Timing) + Send>;

impl<T: Send + 'static> std::fmt::Debug for Done<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("completed", &self.deliver.is_none())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Done<T> {
    /// A completion that runs `deliver` with the result.
    pub fn new(deliver: impl FnOnce(Result<T, StoreError>) + Send + 'static) -> Self {
        Self::timed(move |r, _| deliver(r))
    }

    /// A completion that runs `deliver` with the result and its [`Timing`].
    pub fn timed(deliver: impl FnOnce(Result<T, StoreError>, Timing) + Send + 'static) -> Self {
        Self {
            deliver: Some(Box::new(deliver)),
        }
    }

    /// Delivers the result.
    pub fn complete(self, result: Result<T, StoreError>) {
        self.complete_timed(result, Timing::default());
    }

    /// Delivers the result with where its time went.
    pub fn complete_timed(mut self, result: Result<T, StoreError>, timing: Timing) {
        if let Some(deliver) = self.deliver.take() {
            deliver(result, timing);
        }
    }

    /// A completion for another result type, converted by `convert` (on the completing thread)
    /// before this one is completed: how a backend turns its internal answer into the typed one.
    pub fn adapt<U: Send + 'static>(
        self,
        convert: impl FnOnce(Result<U, StoreError>) -> Result<T, StoreError> + Send + 'static,
    ) -> Done<U> {
        Done::timed(move |u, timing| self.complete_timed(convert(u), timing))
    }

    /// The same completion, running `observe` on the result first (on the completing thread,
    /// whether or not anyone still waits for it): how the engine emits events for a write
    /// whose caller went away.
    pub fn observed(self, observe: impl FnOnce(&Result<T, StoreError>) + Send + 'static) -> Self {
        self.observed_timed(move |r, _| observe(r))
    }

    /// As [`Done::observed`], with the write's [`Timing`].
    pub fn observed_timed(
        self,
        observe: impl FnOnce(&Result<T, StoreError>, Timing) + Send + 'static,
    ) -> Self {
        Done::timed(move |r, timing| {
            observe(&r, timing);
            self.complete_timed(r, timing);
        })
    }
}

impl<T: Send + 'static> Drop for Done<T> {
    fn drop(&mut self) {
        if let Some(deliver) = self.deliver.take() {
            deliver(
                Err(StoreError::Failed(Failure::WriterStopped)),
                Timing::default(),
            );
        }
    }
}

/// The state shared by a [`Done`] made by [`Pending::channel`] and its [`Pending`].
struct Slot<T> {
    value: Option<Result<T, StoreError>>,
    waker: Option<Waker>,
}

/// A write in flight, or any answer to come: a `Future` that works on any executor (it needs
/// no runtime: the completing thread wakes it), and a blocking [`Pending::wait`] for threads.
///
/// Dropping it does not cancel anything: the operation was handed to the backend when the
/// `Pending` was made, and it is applied, atomically and durably, whether or not anyone awaits
/// the answer.
#[must_use = "a Pending does nothing more when polled than report the answer; the write itself is already submitted"]
pub struct Pending<T, E = StoreError> {
    future: Pin<Box<dyn Future<Output = Result<T, E>> + Send>>,
}

impl<T, E> std::fmt::Debug for Pending<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Pending<T, StoreError> {
    /// A completion and the `Pending` it completes.
    pub fn channel() -> (Done<T>, Self) {
        let slot = Arc::new(Mutex::new(Slot {
            value: None,
            waker: None,
        }));
        let theirs = Arc::clone(&slot);
        let done = Done::new(move |r| {
            let waker = match theirs.lock() {
                Ok(mut s) => {
                    s.value = Some(r);
                    s.waker.take()
                }
                Err(_) => None,
            };
            if let Some(w) = waker {
                w.wake();
            }
        });
        let future = std::future::poll_fn(move |cx: &mut Context<'_>| {
            let Ok(mut s) = slot.lock() else {
                return Poll::Ready(Err(StoreError::Failed(Failure::LockPoisoned)));
            };
            match s.value.take() {
                Some(v) => Poll::Ready(v),
                None => {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        });
        (
            done,
            Self {
                future: Box::pin(future),
            },
        )
    }

    /// Runs `start` with a fresh completion and returns what completes it: the usual way to
    /// call a backend's write.
    pub fn start(start: impl FnOnce(Done<T>)) -> Self {
        let (done, pending) = Self::channel();
        start(done);
        pending
    }
}

impl<T: Send + 'static, E: Send + 'static> Pending<T, E> {
    /// An answer already known (a refusal before any write, say).
    pub fn ready(result: Result<T, E>) -> Self {
        Self {
            future: Box::pin(std::future::ready(result)),
        }
    }

    /// The same answer, converted by `f` once it arrives (on the thread that awaits it).
    pub fn map<U: Send + 'static, F: Send + 'static>(
        self,
        f: impl FnOnce(Result<T, E>) -> Result<U, F> + Send + 'static,
    ) -> Pending<U, F> {
        let inner = self.future;
        Pending {
            future: Box::pin(async move { f(inner.await) }),
        }
    }

    /// Blocks the calling thread until the answer arrives. Do not call it on an async runtime's
    /// thread: `.await` the `Pending` there.
    ///
    /// # Errors
    /// The operation's error.
    pub fn wait(self) -> Result<T, E> {
        block_on(self.future)
    }
}

impl<T, E> Future for Pending<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

/// Wakes a thread parked in [`block_on`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread, parking between polls. A spurious wake-up only polls again.
fn block_on<O>(mut future: Pin<Box<dyn Future<Output = O> + Send>>) -> O {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_from_another_thread_wakes_the_waiter() {
        let (done, pending) = Pending::<u32>::channel();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            done.complete(Ok(7));
        });
        assert_eq!(pending.map(|r| r.map(|v| v + 1)).wait().unwrap(), 8);
        t.join().unwrap();
    }

    #[test]
    fn a_dropped_completion_answers_instead_of_hanging() {
        let (done, pending) = Pending::<u32>::channel();
        drop(done);
        assert!(matches!(
            pending.wait(),
            Err(StoreError::Failed(Failure::WriterStopped))
        ));
    }

    #[test]
    fn the_observer_runs_even_when_nobody_waits() {
        let seen = Arc::new(Mutex::new(None));
        let s = Arc::clone(&seen);
        let (done, pending) = Pending::<u32>::channel();
        let done = done.observed(move |r| *s.lock().unwrap() = r.as_ref().ok().copied());
        drop(pending);
        done.complete(Ok(3));
        assert_eq!(*seen.lock().unwrap(), Some(3));
    }
}
