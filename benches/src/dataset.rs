//! The deterministic data set every system is loaded with.
//!
//! Keys are 40 bytes, the shape of a tokendb access key (a deadline, then a keyed BLAKE3 hash of the
//! secret): key `i` is a deadline rising with `i` (tokens issued one after another) followed by the
//! keyed BLAKE3 hash of `i`, so they are the same on every run. Values are pseudo-random bytes
//! (sealed records do not compress) of a configurable size, also the same on every run. Keys are
//! held in memory (40 MB per million) so that a worker picks one with a single random index, with
//! no hashing on the measured path; values are made on the fly when loading.

use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};

/// Default value size in bytes: the size of the record tokendb stores for one standalone access
/// token in the comparison (`engine::access_record_size`, checked by a test), so that every peer
/// stores values as large as tokendb's.
pub const DEFAULT_VALUE_SIZE: usize = 210;

/// Length of a key: a deadline (u64 BE) and a BLAKE3 output, like a tokendb access key.
pub const KEY_LEN: usize = 40;

/// The deadline of key 0, Unix ms; key `i` has `FIRST_DEADLINE + i`.
const FIRST_DEADLINE: u64 = 1_800_000_000_000;

/// A key of the data set.
pub type Key = [u8; KEY_LEN];

/// Default seed: the data set is the same on every run unless asked otherwise.
pub const DEFAULT_SEED: u64 = 1;

/// N keys and a value size; see the module docs.
#[derive(Debug, Clone)]
pub struct Dataset {
    keys: Vec<Key>,
    value_size: usize,
    seed: u64,
}

impl Dataset {
    /// The data set of `tokens` keys (at least one) with values of `value_size` bytes, default seed.
    pub fn new(tokens: usize, value_size: usize) -> Self {
        Self::with_seed(tokens, value_size, DEFAULT_SEED)
    }

    /// As [`Dataset::new`], with another seed.
    pub fn with_seed(tokens: usize, value_size: usize, seed: u64) -> Self {
        let hash_key = blake3::derive_key("tokendb-benches 2026 dataset key", &seed.to_le_bytes());
        let keys = (0..tokens.max(1) as u64)
            .map(|i| {
                let mut key = [0u8; KEY_LEN];
                let (deadline, id) = key.split_at_mut(8);
                deadline.copy_from_slice(&(FIRST_DEADLINE + i).to_be_bytes());
                id.copy_from_slice(blake3::keyed_hash(&hash_key, &i.to_le_bytes()).as_bytes());
                key
            })
            .collect();
        Self {
            keys,
            value_size,
            seed,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a data set has at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Size of every value, in bytes.
    pub fn value_size(&self) -> usize {
        self.value_size
    }

    /// All keys, in load order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// A key chosen uniformly at random: what a lookup worker asks for.
    pub fn random_key(&self, rng: &mut SmallRng) -> &Key {
        const NONE: Key = [0; KEY_LEN];
        let i = rng.random_range(0..self.keys.len());
        self.keys.get(i).unwrap_or(&NONE)
    }

    /// Writes the value of key `i` into `buf` (resized to the value size).
    pub fn fill_value(&self, i: usize, buf: &mut Vec<u8>) {
        buf.resize(self.value_size, 0);
        SmallRng::seed_from_u64(self.seed ^ (i as u64).wrapping_mul(0xff51_afd7_ed55_8ccd))
            .fill_bytes(buf);
    }

    /// The value of key `i`.
    pub fn value(&self, i: usize) -> Vec<u8> {
        let mut v = Vec::new();
        self.fill_value(i, &mut v);
        v
    }

    /// Calls `f` with each (key, value) pair, in load order; stops at the first error.
    pub fn try_for_each<E>(
        &self,
        mut f: impl FnMut(&Key, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut buf = Vec::with_capacity(self.value_size);
        for (i, key) in self.keys.iter().enumerate() {
            self.fill_value(i, &mut buf);
            f(key, &buf)?;
        }
        Ok(())
    }
}

/// A fresh random key, not one of the data set's (in practice: 2^-256 odds): what an `issue` writes.
pub fn fresh_key(rng: &mut SmallRng) -> Key {
    let mut key = [0; KEY_LEN];
    rng.fill_bytes(&mut key);
    key
}

/// A fresh random value of `len` bytes, written into `buf`: what an `issue` or a `rotate` stores.
pub fn fresh_value(rng: &mut SmallRng, len: usize, buf: &mut Vec<u8>) {
    buf.resize(len, 0);
    rng.fill_bytes(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let a = Dataset::new(1000, 160);
        let b = Dataset::new(1000, 160);
        assert_eq!(a.keys(), b.keys());
        assert_eq!(a.value(7), b.value(7));
        assert_eq!(a.value(7).len(), 160);
        assert_ne!(a.value(7), a.value(8));
        let mut keys = a.keys().to_vec();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 1000);
        assert_ne!(
            Dataset::with_seed(10, 1, 2).keys(),
            Dataset::new(10, 1).keys()
        );
        assert_eq!(Dataset::new(0, 1).len(), 1);
    }
}
