//! A disk that fails on demand, for tokendb's reliability tests (feature `fault-injection`).
//!
//! Not part of the supported API: compiled only with the `fault-injection` feature, which no
//! release build enables.
//!
//! A [`FaultyDisk`] is an in-memory image that a [`Store`](crate::Store) can run on instead of a
//! file ([`Store::create_on`](crate::Store::create_on), [`Store::open_on`](crate::Store::open_on)).
//! It keeps two images: what a reader of the file sees now (every write so far), and what
//! survives a power loss (the writes made before the last successful sync). A test can make the
//! k-th read, write, sync or length change from now fail with `EIO` or `ENOSPC`, keep one kind
//! failing until it is healed (a full disk), or cut the power after a number of operations:
//! from then on every operation fails and nothing reaches either image.

use std::sync::{Arc, Mutex, MutexGuard};

/// One kind of storage call redb makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoKind {
    /// A read of bytes already in the file.
    Read,
    /// A write of bytes (possibly past the end).
    Write,
    /// `fsync`: makes every earlier write survive a power loss.
    Sync,
    /// A change of the file's length.
    SetLen,
}

impl IoKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 4] = [Self::Read, Self::Write, Self::Sync, Self::SetLen];
}

/// The error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultError {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: no space left on the device.
    Enospc,
}

impl FaultError {
    /// The `std::io::Error` the storage call returns.
    #[must_use]
    pub fn to_io(self) -> std::io::Error {
        match self {
            Self::Eio => std::io::Error::from_raw_os_error(5),
            Self::Enospc => std::io::Error::from_raw_os_error(28),
        }
    }
}

/// How many storage calls of each kind the disk has served (failed ones included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoCounts {
    /// Reads.
    pub reads: u64,
    /// Writes.
    pub writes: u64,
    /// Syncs.
    pub syncs: u64,
    /// Length changes.
    pub set_lens: u64,
}

impl IoCounts {
    /// The count of one kind.
    #[must_use]
    pub fn of(&self, kind: IoKind) -> u64 {
        match kind {
            IoKind::Read => self.reads,
            IoKind::Write => self.writes,
            IoKind::Sync => self.syncs,
            IoKind::SetLen => self.set_lens,
        }
    }

    fn bump(&mut self, kind: IoKind) -> u64 {
        let c = match kind {
            IoKind::Read => &mut self.reads,
            IoKind::Write => &mut self.writes,
            IoKind::Sync => &mut self.syncs,
            IoKind::SetLen => &mut self.set_lens,
        };
        *c += 1;
        *c
    }

    /// All calls together.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.reads + self.writes + self.syncs + self.set_lens
    }
}

/// A write made since the last sync.
#[derive(Clone, Debug)]
enum Unsynced {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

#[derive(Debug, Default)]
struct State {
    /// What a reader sees now.
    volatile: Vec<u8>,
    /// What survives a power loss.
    durable: Vec<u8>,
    /// Writes since the last sync, in order.
    unsynced: Vec<Unsynced>,
    counts: IoCounts,
    /// Fail the call of this kind whose count reaches this number, once.
    once: Option<(IoKind, u64, FaultError)>,
    /// Fail every call of this kind until healed.
    always: Option<(IoKind, FaultError)>,
    /// Calls left before the power goes (any kind).
    power_left: Option<u64>,
    power_lost: bool,
    fired: u64,
}

impl State {
    /// Counts a call and says whether it fails.
    fn enter(&mut self, kind: IoKind) -> Result<(), std::io::Error> {
        let n = self.counts.bump(kind);
        if self.power_lost {
            return Err(FaultError::Eio.to_io());
        }
        if let Some(left) = self.power_left.as_mut() {
            if *left == 0 {
                self.power_lost = true;
                self.fired += 1;
                return Err(FaultError::Eio.to_io());
            }
            *left -= 1;
        }
        if let Some((k, at, e)) = self.once
            && k == kind
            && at == n
        {
            self.once = None;
            self.fired += 1;
            return Err(e.to_io());
        }
        if let Some((k, e)) = self.always
            && k == kind
        {
            self.fired += 1;
            return Err(e.to_io());
        }
        Ok(())
    }
}

fn apply(image: &mut Vec<u8>, w: &Unsynced) {
    match w {
        Unsynced::Write { offset, data } => {
            let end = offset.saturating_add(data.len());
            if image.len() < end {
                image.resize(end, 0);
            }
            if let Some(dst) = image.get_mut(*offset..end) {
                dst.copy_from_slice(data);
            }
        }
        Unsynced::SetLen(len) => image.resize(*len, 0),
    }
}

/// An in-memory disk that fails on demand. Clones share the disk.
#[derive(Clone, Debug, Default)]
pub struct FaultyDisk {
    state: Arc<Mutex<State>>,
}

impl FaultyDisk {
    /// An empty disk.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk holding `image`, synced.
    #[must_use]
    pub fn from_image(image: Vec<u8>) -> Self {
        let disk = Self::default();
        {
            let mut s = disk.lock();
            s.durable.clone_from(&image);
            s.volatile = image;
        }
        disk
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Makes the `k`-th call of `kind` from now (1 for the next one) fail with `error`, once.
    /// Replaces an earlier one-shot fault that has not fired.
    pub fn fail_nth(&self, kind: IoKind, k: u64, error: FaultError) {
        let mut s = self.lock();
        let at = s.counts.of(kind).saturating_add(k);
        s.once = Some((kind, at, error));
    }

    /// Makes every call of `kind` fail with `error` until [`FaultyDisk::heal`] (a full disk).
    pub fn fail_always(&self, kind: IoKind, error: FaultError) {
        self.lock().always = Some((kind, error));
    }

    /// Removes every pending fault (not a power loss).
    pub fn heal(&self) {
        let mut s = self.lock();
        s.once = None;
        s.always = None;
    }

    /// Cuts the power after `calls` more storage calls: the next call after those, and every
    /// call after it, fails with `EIO`, and neither image changes any more.
    pub fn cut_power_after(&self, calls: u64) {
        self.lock().power_left = Some(calls);
    }

    /// Whether the power was cut.
    #[must_use]
    pub fn power_lost(&self) -> bool {
        self.lock().power_lost
    }

    /// Storage calls served so far.
    #[must_use]
    pub fn counts(&self) -> IoCounts {
        self.lock().counts
    }

    /// How many calls an injected fault failed (a power loss counts once).
    #[must_use]
    pub fn faults_fired(&self) -> u64 {
        self.lock().fired
    }

    /// What a reader of the file sees now: every write, synced or not.
    #[must_use]
    pub fn current_image(&self) -> Vec<u8> {
        self.lock().volatile.clone()
    }

    /// What survives a power loss now: the writes made before the last successful sync.
    #[must_use]
    pub fn durable_image(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }

    /// What a power loss could leave when the disk wrote back some of the unsynced writes on its
    /// own, in any order: the durable image with each unsynced write applied or not, as `keep`
    /// says (called once per unsynced write, oldest first).
    #[must_use]
    pub fn torn_image(&self, mut keep: impl FnMut() -> bool) -> Vec<u8> {
        let s = self.lock();
        let mut image = s.durable.clone();
        for w in &s.unsynced {
            if keep() {
                apply(&mut image, w);
            }
        }
        image
    }

    /// Like [`Self::torn_image`], but each unsynced write reaches the disk in pieces of `sector`
    /// bytes, each kept or not as `keep` says (called once per piece, in order): a page left
    /// half old, half new, as a drive that writes sectors atomically but pages not may leave it.
    /// A length change is kept or not as a whole.
    #[must_use]
    pub fn torn_sectors_image(&self, sector: usize, mut keep: impl FnMut() -> bool) -> Vec<u8> {
        let s = self.lock();
        let mut image = s.durable.clone();
        let sector = sector.max(1);
        for w in &s.unsynced {
            match w {
                Unsynced::Write { offset, data } => {
                    for (i, piece) in data.chunks(sector).enumerate() {
                        if keep() {
                            let part = Unsynced::Write {
                                offset: offset.saturating_add(i.saturating_mul(sector)),
                                data: piece.to_vec(),
                            };
                            apply(&mut image, &part);
                        }
                    }
                }
                Unsynced::SetLen(_) => {
                    if keep() {
                        apply(&mut image, w);
                    }
                }
            }
        }
        image
    }

    /// Number of writes and length changes not yet synced.
    #[must_use]
    pub fn unsynced(&self) -> usize {
        self.lock().unsynced.len()
    }

    pub(crate) fn backend(&self) -> DiskBackend {
        DiskBackend(self.clone())
    }
}

/// The disk as redb sees it.
#[derive(Debug)]
pub(crate) struct DiskBackend(FaultyDisk);

fn out_of_range() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::UnexpectedEof)
}

type IoResult<T> = Result<T, redb::BackendError>;

impl redb::StorageBackend for DiskBackend {
    fn len(&self) -> IoResult<u64> {
        let s = self.0.lock();
        if s.power_lost {
            return Err(FaultError::Eio.to_io().into());
        }
        Ok(s.volatile.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        let mut s = self.0.lock();
        s.enter(IoKind::Read)?;
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(out.len()).ok_or_else(out_of_range)?;
        let src = s.volatile.get(start..end).ok_or_else(out_of_range)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        let mut s = self.0.lock();
        s.enter(IoKind::SetLen)?;
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        let w = Unsynced::SetLen(len);
        apply(&mut s.volatile, &w);
        s.unsynced.push(w);
        Ok(())
    }

    fn sync_data(&self) -> IoResult<()> {
        let mut s = self.0.lock();
        s.enter(IoKind::Sync)?;
        let unsynced = std::mem::take(&mut s.unsynced);
        for w in &unsynced {
            apply(&mut s.durable, w);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        let mut s = self.0.lock();
        s.enter(IoKind::Write)?;
        let offset = usize::try_from(offset).map_err(|_| out_of_range())?;
        let w = Unsynced::Write {
            offset,
            data: data.to_vec(),
        };
        apply(&mut s.volatile, &w);
        s.unsynced.push(w);
        Ok(())
    }
}
