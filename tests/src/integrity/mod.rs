//! The integrity checks of design §9 promises 5 and 6, shared by the fuzz targets in `fuzz/`
//! and the integration tests that replay their corpora (`tests/integration/fuzz_corpus.rs`),
//! sweep bit flips over a whole file (`corruption.rs`) and feed bad input (`bad_input.rs`).
//!
//! Every check returns `Err(description)` for a broken promise (a wrong answer, a round trip
//! that does not hold, an outcome the reference model does not predict). A panic inside tokendb
//! is not caught here: the fuzzer must see it as a crash, and the tests catch it themselves.
//!
//! * [`codec`]: token parsing and the record codec, fed arbitrary bytes;
//! * [`model`]: random operation sequences against a reference model of design §5;
//! * [`corrupt`]: a small database, damaged on purpose, looked up token by token.

pub mod codec;
pub mod corrupt;
pub mod model;

use std::path::{Path, PathBuf};

/// 2027-01-15T08:00:00Z: a fixed start, so no check reads the wall clock.
pub const T0: u64 = 1_800_000_000_000;

/// Where scratch databases go: `/dev/shm` when the machine has it (a real redb file, but a
/// commit costs no disk flush), the system temp dir otherwise.
#[must_use]
pub fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A cursor over fuzz input that never fails: past the end it yields zeros.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for (o, b) in out.iter_mut().zip(self.bytes(N)) {
            *o = *b;
        }
        out
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }

    /// An index below `len` (0 when `len` is 0).
    pub(crate) fn pick(&mut self, len: usize) -> usize {
        match len {
            0 => 0,
            n => usize::from(self.byte()) % n,
        }
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let r = self.data;
        self.data = &[];
        r
    }
}

/// `Err` with a formatted message when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}
pub(crate) use ensure;
