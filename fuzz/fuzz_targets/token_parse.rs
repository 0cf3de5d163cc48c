//! Token parsing: no input panics; a token that parses re-encodes to exactly its input; tokens
//! built from the input round-trip; one-character changes and truncations are refused.
//! The checks live in `tokendb_tests::integrity::codec`, shared with `cargo test`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = tokendb_tests::integrity::codec::check_token_parse(data) {
        panic!("{e}");
    }
});
