//! Up to 64 operations (issue, batch issue, validate, introspect, rotate, present an old token,
//! revoke, move the clock either way, sweep, close and reopen, forge, mangle) on a real database
//! file, each answer compared with a reference model of design §5.
//! The model lives in `tokendb_tests::integrity::model`, shared with `cargo test`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokendb_tests::integrity::{model, scratch_root};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir_in(scratch_root()).expect("scratch dir");
    if let Err(e) = model::run(dir.path(), data) {
        panic!("{e}");
    }
});
