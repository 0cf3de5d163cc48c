//! A small database, built once per process, damaged as the input says (bits flipped, bytes
//! and runs overwritten, pages zeroed, the file truncated), reopened and looked up token by
//! token: an error or an inactive answer, never a panic, never a token reported active that was
//! not, never altered claims. The checks live in `tokendb_tests::integrity::corrupt`, shared
//! with `cargo test`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tokendb_tests::integrity::corrupt::Fixture;
use tokendb_tests::integrity::scratch_root;

struct State {
    dir: tempfile::TempDir,
    fixture: Fixture,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        // libfuzzer-sys's hook aborts on every panic, even one tokendb catches and turns into
        // an error. A panic inside redb on a damaged page, caught by tokendb, is the promised
        // behaviour (an error); any other panic — in tokendb's own code, or one that escapes
        // to this target (libfuzzer-sys then aborts) — is still a crash.
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("/redb-")) {
                eprintln!("redb panicked on the damaged file (tokendb must contain it): {info}");
            } else {
                fuzzer_hook(info);
            }
        }));
        // A static is never dropped, so this dir outlives the process: keep only the one
        // damaged copy in it, under a name that says whose it is.
        let dir = tempfile::Builder::new()
            .prefix("tokendb-fuzz-corrupt-")
            .tempdir_in(scratch_root())
            .expect("scratch dir");
        let fixture = Fixture::build(dir.path(), 12).expect("fixture");
        for built in ["fixture.tdb", "probe.tdb"] {
            let _ = std::fs::remove_file(dir.path().join(built));
        }
        State { dir, fixture }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = state();
    let (damaged, writes) = s.fixture.mutate(data);
    let path = s.dir.path().join("damaged.tdb");
    if let Err(e) = s.fixture.check(&path, &damaged, writes) {
        panic!("{e}");
    }
});
