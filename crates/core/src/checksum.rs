//! The public token checksum: CRC-32 (IEEE 802.3, reflected, as in zlib, PNG, Ethernet and the
//! checksum of GitHub's token format), 4 bytes big-endian.
//!
//! It is public and not a security control: it lets secret scanners recognise tokens and refuses
//! typos, truncation and garbage before any disk access. Origin is proven by the keyed hash of
//! the secret and the refresh tag, never by this. CRC-32 detects every error burst of up to 32
//! bits (so any single-character change of the base64url text) and lets through 1 in 2³² random
//! strings; the unkeyed BLAKE3 it replaced did no better for this job and cost ~780 instructions
//! per validation (callgrind).
//!
//! Slicing-by-8 (eight const-generated 256-entry tables, 8 KiB): eight bytes per step, with the
//! tables' independent lookups overlapping, instead of a dependent lookup per byte. The text
//! starts with `<prefix>_<kind>_`, fixed by the format, so [`crate::TokenFormat`] keeps the
//! register state after it and a parse folds in only the body. For an access token's 40-byte body
//! this takes ~132 instructions per validation (callgrind, `profile_validate run DIR 200000
//! validate`), against ~241 when the 7 bytes of `tdb_at_` were folded in on every parse.

/// The IEEE 802.3 polynomial, bit-reflected.
const POLY: u32 = 0xEDB8_8320;

/// `TABLES[0][b]` is the CRC register update for byte `b`; `TABLES[k][b]` is that update followed
/// by `k` zero bytes, so eight bytes can be folded in at once.
#[allow(clippy::indexing_slicing)] // const evaluation: a bad index is a compile error
const TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                crc >> 1 ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = prev >> 8 ^ tables[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
};

fn at(table: &[u32; 256], byte: u8) -> u32 {
    // A `u8` always indexes a 256-entry table; the fallback is never taken.
    table.get(usize::from(byte)).copied().unwrap_or(0)
}

/// A running CRC-32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Crc32 {
    /// The register, pre- and post-inverted as the standard CRC-32 is.
    state: u32,
}

impl Crc32 {
    /// An empty checksum.
    pub(crate) const fn new() -> Self {
        Self { state: !0 }
    }

    /// Folds `data` in.
    pub(crate) fn update(&mut self, data: &[u8]) {
        let [t0, t1, t2, t3, t4, t5, t6, t7] = &TABLES;
        let mut crc = self.state;
        let (blocks, tail) = data.as_chunks::<8>();
        for &[a, b, c, d, e, f, g, h] in blocks {
            let [a, b, c, d] = (crc ^ u32::from_le_bytes([a, b, c, d])).to_le_bytes();
            crc = at(t7, a)
                ^ at(t6, b)
                ^ at(t5, c)
                ^ at(t4, d)
                ^ at(t3, e)
                ^ at(t2, f)
                ^ at(t1, g)
                ^ at(t0, h);
        }
        for &byte in tail {
            crc = crc >> 8 ^ at(t0, crc.to_le_bytes()[0] ^ byte);
        }
        self.state = crc;
    }

    /// The CRC-32 of everything folded in.
    pub(crate) const fn finish(self) -> u32 {
        !self.state
    }
}

/// CRC-32 of the concatenation of `parts`, big-endian: the token checksum computed from scratch,
/// the reference for [`crate::TokenFormat`], which starts from a state saved after its prefix.
#[cfg(test)]
pub(crate) fn token_checksum<const N: usize>(parts: [&[u8]; N]) -> [u8; 4] {
    let mut crc = Crc32::new();
    for part in parts {
        crc.update(part);
    }
    crc.finish().to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn crc32(data: &[u8]) -> u32 {
        let mut c = Crc32::new();
        c.update(data);
        c.finish()
    }

    /// The textbook bit-at-a-time CRC-32, the reference the tables must agree with.
    fn bitwise(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn known_answers() {
        // The CRC catalogue's check value for CRC-32/ISO-HDLC, and the empty string.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        // zlib's crc32() of these strings.
        assert_eq!(crc32(b"a"), 0xE8B7_BE43);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(crc32(&[0; 32]), 0x190A_55AD);
        assert_eq!(crc32(&[0xFF; 32]), 0xFF6C_AB0B);
        assert_eq!(
            token_checksum([b"1234", b"", b"56789"]),
            [0xCB, 0xF4, 0x39, 0x26]
        );
    }

    #[test]
    fn tables_match_the_polynomial() {
        assert_eq!(TABLES[0][1], 0x7707_3096);
        assert_eq!(TABLES[0][255], 0x2D02_EF8D);
        for b in 0..=255u8 {
            assert_eq!(crc32(&[b]), bitwise(&[b]));
        }
    }

    /// Every slicing table against the bit-at-a-time register: `TABLES[k][b]` is the register
    /// `b` shifted through its own 8 bits and then `k` zero bytes.
    #[test]
    fn slicing_tables_match_the_polynomial() {
        for (k, table) in TABLES.iter().enumerate() {
            for (b, &entry) in table.iter().enumerate() {
                let mut reg = u32::try_from(b).unwrap();
                for _ in 0..8 * (k + 1) {
                    reg = if reg & 1 == 1 {
                        (reg >> 1) ^ POLY
                    } else {
                        reg >> 1
                    };
                }
                assert_eq!(entry, reg, "TABLES[{k}][{b}]");
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_bitwise(data in proptest::collection::vec(any::<u8>(), 0..200), split in 0usize..200) {
            prop_assert_eq!(crc32(&data), bitwise(&data));
            // Feeding it in two pieces at any point gives the same answer.
            let (a, b) = data.split_at(split.min(data.len()));
            prop_assert_eq!(token_checksum([a, b]), bitwise(&data).to_be_bytes());
        }
    }
}
