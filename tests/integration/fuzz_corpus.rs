//! Replays the committed seed corpus of every fuzz target (`fuzz/corpus/<target>/seed-*`)
//! through the same checks the targets run (`tokendb_tests::integrity`), so `cargo test`
//! covers them without cargo-fuzz. A crash the fuzzer finds is fixed, then its input is
//! committed here as a seed, and this replay keeps it fixed.

use std::path::{Path, PathBuf};
use tokendb_tests::integrity::corrupt::Fixture;
use tokendb_tests::integrity::{codec, model, scratch_root};

/// The committed seeds of one target, sorted by name.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 3,
        "{target}: only {} seeds in {}",
        out.len(),
        dir.display()
    );
    out
}

#[test]
fn token_parse_seeds() {
    for (path, data) in seeds("token_parse") {
        codec::check_token_parse(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn record_codec_seeds() {
    for (path, data) in seeds("record_codec") {
        codec::check_record_codec(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// The record-codec target signs and seals its input with a mirror of the private MAC and AAD
/// layouts; if the codec changes, this fails instead of the target silently losing coverage.
#[test]
fn record_codec_mirror_is_current() {
    codec::check_mirror_is_current().unwrap();
}

#[test]
fn ops_model_seeds() {
    let mut ops = 0;
    for (path, data) in seeds("ops_model") {
        let dir = tempfile::tempdir_in(scratch_root()).unwrap();
        let report =
            model::run(dir.path(), &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ops += report.ops;
    }
    assert!(ops > 0);
}

#[test]
fn corrupt_file_seeds() {
    let dir = tempfile::tempdir_in(scratch_root()).unwrap();
    let fixture = Fixture::build(dir.path(), 12).unwrap();
    let path = dir.path().join("damaged.tdb");
    for (seed, data) in seeds("corrupt_file") {
        let (damaged, writes) = fixture.mutate(&data);
        fixture
            .check(&path, &damaged, writes)
            .unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
    }
}
