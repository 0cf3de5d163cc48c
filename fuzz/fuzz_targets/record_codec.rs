//! The on-disk record codec: arbitrary bytes through `FamilyRecord`/`AccessRecord::decode`,
//! `open_body` and the grace slot (raw, and signed or sealed so the parsers behind the MAC and
//! AEAD run) never panic; records and bodies built from the input round-trip.
//! The checks live in `tokendb_tests::integrity::codec`, shared with `cargo test`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = tokendb_tests::integrity::codec::check_record_codec(data) {
        panic!("{e}");
    }
});
