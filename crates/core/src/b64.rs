//! Unpadded base64url (RFC 4648 §5) for the token wire format.
//!
//! Tokens have fixed lengths, so this codec only does what the format needs: it encodes a byte
//! slice, and decodes text into an output buffer whose length fixes the text's length. Decoding
//! refuses any byte outside `A-Z a-z 0-9 - _` (padding `=` included) and non-canonical trailing
//! bits, so every byte string has exactly one spelling. Work is linear in the buffer length and
//! branch-free on the text's content: every symbol is looked up, and validity is checked once at
//! the end.
//!
//! Written for this crate rather than calling the `base64` crate's general-purpose engine (which
//! `keys.rs` still uses for master-key text): parsing is on every validation's path, and a
//! fixed-length decoder has no configuration to get wrong.
//!
//! Decoding looks each symbol up in a table for its position in the quad, already shifted into
//! place, so a quad is four lookups ORed together; two quads are decoded per step and stored as
//! one 6-byte write. For an access token's 59 characters this takes ~313 instructions per
//! validation (callgrind, `profile_validate run DIR 200000 validate`), against ~521 for one quad
//! per step with a single value table and shifts.

/// The 64 symbols, in value order.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Set in a table entry for a byte outside the alphabet. Symbol values fill at most the low 24
/// bits of a quad's word, so any bit above them in the OR of all looked-up entries says that some
/// byte was invalid.
const INVALID: u32 = 0xFF00_0000;

/// `DECODE[k][byte]` is the value of `byte` as the `k`th symbol of a quad, already shifted to its
/// place in the quad's 24 bits (`18 - 6k`), or [`INVALID`]. A quad is then four lookups ORed
/// together, with no shifts on the hot path.
#[allow(clippy::indexing_slicing)] // const evaluation: a bad index is a compile error
const DECODE: [[u32; 256]; 4] = {
    let mut tables = [[INVALID; 256]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < ALPHABET.len() {
            tables[k][ALPHABET[i] as usize] = (i as u32) << (18 - 6 * k);
            i += 1;
        }
        k += 1;
    }
    tables
};

/// Why text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The text is not the encoded length of the output buffer.
    Length,
    /// A byte is not in the base64url alphabet (padding included).
    Symbol,
    /// The last symbol carries bits past the end of the data: another spelling of the same bytes.
    NonCanonical,
}

/// Characters that encode `n` bytes without padding.
#[must_use]
pub(crate) const fn encoded_len(n: usize) -> usize {
    n / 3 * 4
        + match n % 3 {
            0 => 0,
            1 => 2,
            _ => 3,
        }
}

fn symbol(value: u32) -> char {
    // `value & 63` is always in range; the fallback is never taken.
    char::from(ALPHABET.get((value & 63) as usize).copied().unwrap_or(b'A'))
}

fn at(table: &[u32; 256], byte: u8) -> u32 {
    // A `u8` always indexes a 256-entry table; the fallback is never taken.
    table.get(usize::from(byte)).copied().unwrap_or(INVALID)
}

/// Appends the unpadded base64url form of `data` to `out`.
pub(crate) fn encode(data: &[u8], out: &mut String) {
    out.reserve(encoded_len(data.len()));
    let (triples, rest) = data.as_chunks::<3>();
    for &[a, b, c] in triples {
        let n = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
        for shift in [18, 12, 6, 0] {
            out.push(symbol(n >> shift));
        }
    }
    match *rest {
        [a] => {
            let n = u32::from(a) << 16;
            out.push(symbol(n >> 18));
            out.push(symbol(n >> 12));
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.push(symbol(n >> 18));
            out.push(symbol(n >> 12));
            out.push(symbol(n >> 6));
        }
        _ => {}
    }
}

/// Decodes `text` into all of `out`: `text` must be exactly [`encoded_len`]`(out.len())` bytes
/// of the alphabet, with zero trailing bits. On error `out` holds unspecified bytes.
pub(crate) fn decode(text: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    if text.len() != encoded_len(out.len()) {
        return Err(DecodeError::Length);
    }
    let [t0, t1, t2, t3] = &DECODE;
    let quad = |a, b, c, d| at(t0, a) | at(t1, b) | at(t2, c) | at(t3, d);
    let mut seen = 0u32;
    // Two quads per step, stored as one 6-byte write. An invalid byte's marker bits of the
    // second quad land in the first quad's last byte; `seen` still catches it, and on error the
    // output is unspecified anyway.
    let (octets, text_rest) = text.as_chunks::<8>();
    let (sextets, out_rest) = out.as_chunks_mut::<6>();
    for (&[a, b, c, d, e, f, g, h], sextet) in octets.iter().zip(sextets.iter_mut()) {
        let (n, m) = (quad(a, b, c, d), quad(e, f, g, h));
        seen |= n | m;
        if let Some(bytes) = (u64::from(n) << 24 | u64::from(m))
            .to_be_bytes()
            .last_chunk()
        {
            *sextet = *bytes;
        }
    }
    // At most one whole quad is left.
    let (quads, text_rest) = text_rest.as_chunks::<4>();
    let (triples, out_rest) = out_rest.as_chunks_mut::<3>();
    for (&[a, b, c, d], triple) in quads.iter().zip(triples.iter_mut()) {
        let n = quad(a, b, c, d);
        seen |= n;
        if let Some(bytes) = n.to_be_bytes().last_chunk() {
            *triple = *bytes;
        }
    }
    // A partial quad decodes as a whole one would; the bits of its last symbol that fall past
    // the end of the data must be zero.
    let spare = match (text_rest, out_rest) {
        ([], []) => 0,
        (&[a, b], [x]) => {
            let n = at(t0, a) | at(t1, b);
            seen |= n;
            let [_, nx, ..] = n.to_be_bytes();
            *x = nx;
            n & 0xFFFF
        }
        (&[a, b, c], [x, y]) => {
            let n = at(t0, a) | at(t1, b) | at(t2, c);
            seen |= n;
            let [_, nx, ny, _] = n.to_be_bytes();
            *x = nx;
            *y = ny;
            n & 0xFF
        }
        // Unreachable after the length check; refused rather than trusted.
        _ => return Err(DecodeError::Length),
    };
    if seen & INVALID != 0 {
        Err(DecodeError::Symbol)
    } else if spare != 0 {
        Err(DecodeError::NonCanonical)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;

    fn enc(data: &[u8]) -> String {
        let mut s = String::new();
        encode(data, &mut s);
        s
    }

    fn dec(text: &str, len: usize) -> Result<Vec<u8>, DecodeError> {
        let mut out = vec![0; len];
        decode(text.as_bytes(), &mut out).map(|()| out)
    }

    /// RFC 4648 §10 test vectors and the §9 illustrations, in the URL-safe alphabet
    /// (`+` → `-`, `/` → `_`) without padding.
    #[test]
    fn rfc4648_known_answers() {
        let vectors: [(&[u8], &str); 12] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0x14, 0xfb, 0x9c, 0x03, 0xd9, 0x7e], "FPucA9l-"),
            (&[0x14, 0xfb, 0x9c, 0x03, 0xd9], "FPucA9k"),
            (&[0x14, 0xfb, 0x9c, 0x03], "FPucAw"),
            (&[0xfb, 0xff, 0xbf], "-_-_"),
            (&[0x00, 0x10, 0x83, 0x10, 0x51, 0x87], "ABCDEFGH"),
        ];
        for (data, text) in vectors {
            assert_eq!(enc(data), text, "encode {data:02x?}");
            assert_eq!(encoded_len(data.len()), text.len());
            assert_eq!(dec(text, data.len()).unwrap(), data, "decode {text}");
        }
    }

    #[test]
    fn whole_alphabet_round_trips() {
        let text = std::str::from_utf8(ALPHABET).unwrap();
        let data = URL_SAFE_NO_PAD.decode(text).unwrap();
        assert_eq!(dec(text, data.len()).unwrap(), data);
        assert_eq!(enc(&data), text);
    }

    #[test]
    fn refuses_non_canonical_trailing_bits() {
        // "f" is "Zg"; "Zh".."Zv" set bits past the end of the byte.
        for last in "hijklmnopqrstuv".chars() {
            let t = format!("Z{last}");
            assert_eq!(dec(&t, 1), Err(DecodeError::NonCanonical), "{t}");
        }
        // "fo" is "Zm8"; "Zm9", "Zm-", "Zm_" set bits past the end of the second byte.
        for t in ["Zm9", "Zm-", "Zm_", "Zm+"] {
            assert!(dec(t, 2).is_err(), "{t}");
        }
        assert_eq!(dec("Zm9", 2), Err(DecodeError::NonCanonical));
    }

    #[test]
    fn refuses_bytes_outside_the_alphabet() {
        for bad in [b'=', b'+', b'/', b' ', b'\n', 0, 0x7f, 0x80, 0xc3, 0xff] {
            for pos in 0..8 {
                let mut text = *b"Zm9vYmFy";
                text[pos] = bad;
                let mut out = [0; 6];
                assert_eq!(
                    decode(&text, &mut out),
                    Err(DecodeError::Symbol),
                    "{bad:#x} at {pos}"
                );
            }
        }
        // Padding is never accepted, even where a padded encoder would put it.
        assert_eq!(dec("Zg==", 3), Err(DecodeError::Symbol));
        assert_eq!(dec("Zg==", 1), Err(DecodeError::Length));
        assert_eq!(dec("Zm8=", 3), Err(DecodeError::Symbol));
    }

    #[test]
    fn position_tables_match_the_alphabet() {
        for (k, table) in DECODE.iter().enumerate() {
            for (byte, &entry) in (0..=255u8).zip(table) {
                match ALPHABET.iter().position(|&s| s == byte) {
                    Some(v) => assert_eq!(entry, (v as u32) << (18 - 6 * k), "{k} {byte:#x}"),
                    None => assert_eq!(entry & INVALID, INVALID, "{k} {byte:#x}"),
                }
            }
        }
    }

    /// Whole steps of two quads, a lone quad and both partial quads: a bad byte is refused at
    /// every position of every shape, and a good text still decodes after the bad one.
    #[test]
    fn refuses_a_bad_byte_at_every_position_of_every_length() {
        for len in 0..=20 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = enc(&data).into_bytes();
            assert_eq!(dec(std::str::from_utf8(&text).unwrap(), len).unwrap(), data);
            for pos in 0..text.len() {
                for bad in [b'=', b'+', b'/', b'.', 0, 0x80, 0xff] {
                    let mut t = text.clone();
                    t[pos] = bad;
                    let mut out = vec![0; len];
                    assert_eq!(
                        decode(&t, &mut out),
                        Err(DecodeError::Symbol),
                        "{len} {pos} {bad:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_the_wrong_length() {
        for (text, len) in [("Zm9v", 2), ("Zm9", 3), ("Z", 1), ("", 1), ("Zg", 0)] {
            assert_eq!(dec(text, len), Err(DecodeError::Length), "{text} {len}");
        }
    }

    /// Every one- and two-byte text, against the `base64` crate's strict engine.
    #[test]
    fn short_texts_agree_with_the_base64_crate() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let text = [a, b];
                let mut out = [0; 1];
                let ours = decode(&text, &mut out).map(|()| out.to_vec()).ok();
                assert_eq!(ours, URL_SAFE_NO_PAD.decode(text).ok(), "{text:?}");
            }
            let mut out = [0; 0];
            assert_eq!(decode(&[a], &mut out), Err(DecodeError::Length));
        }
    }

    fn near_alphabet() -> impl Strategy<Value = u8> {
        prop_oneof![
            8 => proptest::sample::select(ALPHABET.to_vec()),
            1 => any::<u8>(),
        ]
    }

    proptest! {
        #[test]
        fn round_trip_agrees_with_the_base64_crate(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            let text = enc(&data);
            prop_assert_eq!(&text, &URL_SAFE_NO_PAD.encode(&data));
            prop_assert_eq!(dec(&text, data.len()).unwrap(), data);
        }

        /// Any text (mostly alphabet, some other bytes) is accepted exactly when the `base64`
        /// crate accepts it, with the same bytes.
        #[test]
        fn decode_agrees_with_the_base64_crate(text in proptest::collection::vec(near_alphabet(), 0..110)) {
            let oracle = URL_SAFE_NO_PAD.decode(&text).ok();
            for len in [text.len() * 3 / 4, text.len() * 3 / 4 + 1] {
                let mut out = vec![0; len];
                let ours = decode(&text, &mut out).map(|()| out).ok();
                if encoded_len(len) == text.len() {
                    prop_assert_eq!(&ours, &oracle);
                } else {
                    prop_assert_eq!(ours, None);
                }
            }
        }
    }
}
