//! Promise 5: any bit flipped in the file yields an error or "not found" — never a panic, never
//! a token reported active that was not, never altered claims.
//!
//! A database of a few hundred tokens (refresh and access; rotated, revoked, expired, swept) is
//! damaged one bit at a time; every damaged copy is opened and every token validated and
//! introspected (`tokendb_tests::integrity::corrupt`). By default the sweep takes a stratified
//! sample of byte offsets — the first 4 KiB page (redb's header and commit slots) densely, and
//! the same number of offsets from every later page — so it fits in CI;
//! `TOKENDB_FULL_CORRUPTION_SWEEP=1` flips one bit in every byte of the file
//! (`docs/security.md` has the command and the counts of the last full run);
//! `TOKENDB_CORRUPTION_CASES=N` changes the sample size; `TOKENDB_SWEEP_NO_INTEGRITY_CHECK=1`
//! opens the damaged files without the integrity check at open (to count what it prevents).
//!
//! The cases run in child processes (this test binary again, running [`sweep_worker`]): a
//! panic inside a destructor while unwinding aborts a process, and `catch_unwind` cannot count
//! that. A case whose worker died is counted as an abort, and a new worker carries on after it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokendb_tests::integrity::corrupt::{Fixture, Tally};
use tokendb_tests::integrity::scratch_root;

/// Families in the swept database (about 3.5 probed tokens each).
const FAMILIES: usize = 120;
/// Damaged copies tried by default.
const SAMPLE_CASES: usize = 1_200;
const PAGE: usize = 4096;
/// Set (to the fixture's directory) in a worker process.
const WORKER_ENV: &str = "TOKENDB_SWEEP_WORKER";
/// Cases one worker process runs before it exits and a fresh one takes over.
const WORKER_CASES: usize = 5_000;

/// A small deterministic generator (splitmix64), so a failing case can be named and rerun.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `(offset, bit)` cases: every byte (full), or about `cases` of them: a quarter spread over
/// the first page, the rest spread evenly over the later pages, at pseudo-random offsets.
fn cases(len: usize, full: bool, cases: usize) -> Vec<(usize, u8)> {
    let bit = |off: usize| (mix(off as u64) % 8) as u8;
    if full || cases >= len {
        return (0..len).map(|o| (o, bit(o))).collect();
    }
    let pages = len.div_ceil(PAGE);
    let head = (cases / 4).min(PAGE.min(len));
    let per_page = ((cases - head) / pages.max(1)).max(1);
    let mut out: Vec<(usize, u8)> = (0..head)
        .map(|i| i * PAGE.min(len) / head)
        .map(|o| (o, bit(o)))
        .collect();
    for p in 1..pages {
        for k in 0..per_page {
            let o = p * PAGE + (mix((p * 131 + k) as u64) as usize % PAGE);
            if o < len {
                out.push((o, bit(o)));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What the parent learns about the sweep.
#[derive(Default)]
struct Results {
    tally: Tally,
    panics: Vec<String>,
    aborts: Vec<String>,
    wrong: Vec<String>,
    sites: BTreeMap<String, u64>,
}

/// Runs the cases in `list` (an index into the full case list each) in worker processes, one
/// after another, restarting after a worker dies.
fn drive(dir: &Path, w: usize, list: &[(usize, usize, u8)], results: &Mutex<Results>) {
    let file = dir.join(format!("cases-{w}.txt"));
    let text: Vec<String> = list
        .iter()
        .map(|(i, o, b)| format!("{i} {o} {b}"))
        .collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let mut from = 0;
    let mut stalls = 0;
    while from < list.len() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "corruption::sweep_worker",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, dir)
            .env("TOKENDB_SWEEP_CASES", &file)
            .env("TOKENDB_SWEEP_FROM", from.to_string())
            .env("TOKENDB_SWEEP_SLOT", w.to_string())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("worker-{w}.stderr")))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut started: Option<(usize, String)> = None;
        let mut last_site = String::new();
        let mut done = from;
        for line in out.lines() {
            let line = line.unwrap();
            // libtest prints "test corruption::sweep_worker ... " without a newline first.
            let Some(rest) = line.find("SWEEP ").and_then(|i| line.get(i + 6..)) else {
                continue;
            };
            let mut r = results.lock().unwrap();
            let (pos, what) = rest.split_once(' ').unwrap_or((rest, ""));
            if pos == "site" {
                last_site = what.to_owned();
                *r.sites.entry(what.to_owned()).or_default() += 1;
                continue;
            }
            let pos: usize = pos.parse().unwrap();
            let name = list
                .get(pos)
                .map(|(_, o, b)| format!("offset {o} bit {b}"))
                .unwrap_or_default();
            let (kind, detail) = what.split_once(' ').unwrap_or((what, ""));
            match kind {
                "start" => {
                    started = Some((pos, name));
                    last_site.clear();
                }
                "ok" => {
                    let n: Vec<u64> = detail.split(' ').map(|x| x.parse().unwrap()).collect();
                    let t = Tally {
                        cases: 1,
                        refused_at_open: n[0],
                        unaffected: n[1],
                        degraded: n[2],
                        same: n[3],
                        errors: n[4],
                        not_found: n[5],
                        changed_inactive: n[6],
                        wrong: 0,
                    };
                    r.tally.add(&t);
                    started = None;
                    done = pos + 1;
                }
                "wrong" => {
                    r.tally.cases += 1;
                    r.tally.wrong += 1;
                    r.wrong.push(format!("{name}: {detail}"));
                    started = None;
                    done = pos + 1;
                }
                "panic" => {
                    r.tally.cases += 1;
                    r.panics.push(format!("{name}: {last_site}"));
                    started = None;
                    done = pos + 1;
                }
                _ => {}
            }
        }
        let status = child.wait().unwrap();
        match started {
            Some((pos, name)) => {
                // The worker died in this case (an abort: a panic while unwinding).
                let mut r = results.lock().unwrap();
                r.tally.cases += 1;
                r.aborts
                    .push(format!("{name}: {status}; last panic {last_site}"));
                from = pos + 1;
            }
            None if status.success() && done >= list.len() => break,
            None if status.success() => from = done,
            None => {
                // Died between cases (a background thread, or the process running out of
                // something): count it and carry on; if it keeps dying at the same place,
                // charge the next case and skip it.
                let mut r = results.lock().unwrap();
                r.aborts.push(format!(
                    "worker {w} between cases after {done}: {status}; last panic {last_site}"
                ));
                stalls = if done == from { stalls + 1 } else { 0 };
                from = done;
                if stalls >= 2 {
                    r.tally.cases += 1;
                    from = done + 1;
                    stalls = 0;
                }
            }
        }
    }
}

#[test]
fn bit_flip_sweep() {
    if std::env::var_os(WORKER_ENV).is_some() {
        return;
    }
    let full = std::env::var("TOKENDB_FULL_CORRUPTION_SWEEP").is_ok_and(|v| v == "1");
    let sample: usize = std::env::var("TOKENDB_CORRUPTION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SAMPLE_CASES);
    let dir = tempfile::tempdir_in(scratch_root()).unwrap();
    let started = Instant::now();
    let fixture = Fixture::build(dir.path(), FAMILIES).unwrap();
    fixture.save(dir.path()).unwrap();
    let len = fixture.bytes().len();
    let (active, rotated, revoked, expired, unknown) = fixture.census();
    println!(
        "corruption sweep: file {len} bytes, {} tokens probed (active {active}, rotated {rotated}, revoked {revoked}, expired {expired}, unknown {unknown}), built in {:.1?}",
        fixture.probe_count(),
        started.elapsed()
    );
    let todo = cases(len, full, sample);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let results = Mutex::new(Results::default());
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..workers {
            let list: Vec<(usize, usize, u8)> = todo
                .iter()
                .enumerate()
                .filter(|(i, _)| i % workers == w)
                .map(|(i, (o, b))| (i, *o, *b))
                .collect();
            let (results, dir) = (&results, dir.path());
            s.spawn(move || drive(dir, w, &list, results));
        }
    });
    let r = results.into_inner().unwrap();
    let t = r.tally;
    println!(
        "corruption sweep ({}): {} of {} cases in {:.1?} with {workers} workers: refused at open {}, opened and unaffected {}, opened and degraded {}, panics {}, aborts {}, wrong answers {}",
        if full {
            "one bit in every byte"
        } else {
            "stratified sample"
        },
        t.cases,
        todo.len(),
        started.elapsed(),
        t.refused_at_open,
        t.unaffected,
        t.degraded,
        r.panics.len(),
        r.aborts.len(),
        r.wrong.len(),
    );
    println!(
        "corruption sweep lookups (validate + introspect of one token): same {}, error {}, not found {}, other inactive {}, wrong {}",
        t.same, t.errors, t.not_found, t.changed_inactive, t.wrong
    );
    for (site, n) in &r.sites {
        println!("panic site ({n}x): {site}");
    }
    for p in r.panics.iter().take(10) {
        println!("PANIC {p}");
    }
    for a in r.aborts.iter().take(10) {
        println!("ABORT {a}");
    }
    for w in r.wrong.iter().take(10) {
        println!("WRONG {w}");
    }
    let thread_panics: u64 = r
        .sites
        .iter()
        .filter(|(s, _)| s.contains("thread tokendb-"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(t.cases, todo.len() as u64, "cases lost");
    assert_eq!(thread_panics, 0, "panics on tokendb's own threads");
    assert!(
        r.panics.is_empty() && r.aborts.is_empty(),
        "{} panics and {} aborts",
        r.panics.len(),
        r.aborts.len()
    );
    assert!(r.wrong.is_empty(), "{} wrong answers", r.wrong.len());
}

/// The case being run by this worker, for the panic hook.
static CURRENT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Runs cases for [`bit_flip_sweep`] in a child process; does nothing in a normal test run.
/// Prints one `SWEEP <case> start` line before each case and one result line after it.
#[test]
fn sweep_worker() {
    let Some(dir) = std::env::var_os(WORKER_ENV).map(PathBuf::from) else {
        return;
    };
    let list: Vec<(usize, usize, u8)> =
        std::fs::read_to_string(std::env::var("TOKENDB_SWEEP_CASES").unwrap())
            .unwrap()
            .lines()
            .map(|l| {
                let v: Vec<usize> = l.split(' ').map(|x| x.parse().unwrap()).collect();
                (v[0], v[1], v[2] as u8)
            })
            .collect();
    let from: usize = std::env::var("TOKENDB_SWEEP_FROM")
        .unwrap()
        .parse()
        .unwrap();
    let slot = std::env::var("TOKENDB_SWEEP_SLOT").unwrap();
    std::panic::set_hook(Box::new(|info| {
        // Where in tokendb it happened: the innermost tokendb frame of the backtrace.
        let trace = std::backtrace::Backtrace::force_capture().to_string();
        let frame = trace
            .lines()
            .map(str::trim)
            .filter_map(|l| l.split_once(": ").map(|(_, f)| f))
            .find(|f| f.starts_with("tokendb") && !f.starts_with("tokendb_tests"))
            .unwrap_or("?")
            .to_owned();
        let thread = std::thread::current();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "SWEEP site {} in {frame} on thread {}: {}",
            info.location().map_or_else(String::new, |l| format!(
                "{}:{}",
                l.file().rsplit("/src/").next().unwrap_or(""),
                l.line()
            )),
            thread.name().unwrap_or("?"),
            info.payload_as_str()
                .unwrap_or("")
                .chars()
                .take(60)
                .collect::<String>(),
        );
        let _ = out.flush();
    }));
    // Inside the parent's temp dir, so nothing is left behind when a worker aborts.
    let work = dir.join(format!("work-{slot}"));
    std::fs::create_dir_all(&work).unwrap();
    let fixture = Fixture::load(&dir, &work).unwrap_or_else(|e| panic!("load: {e}"));
    let path = work.join(format!("case-{slot}.tdb"));
    println!();
    // A worker exits after a few thousand cases, so whatever a panicking case leaked (threads,
    // file handles, memory) cannot pile up; the parent starts the next one.
    for (pos, &(_, offset, bit)) in list.iter().enumerate().skip(from).take(WORKER_CASES) {
        CURRENT.store(pos, Ordering::SeqCst);
        println!("SWEEP {pos} start");
        let damaged = fixture.flip(offset, bit);
        let line = match catch_unwind(AssertUnwindSafe(|| fixture.check(&path, &damaged, false))) {
            Ok(Ok(t)) => format!(
                "ok {} {} {} {} {} {} {}",
                t.refused_at_open,
                t.unaffected,
                t.degraded,
                t.same,
                t.errors,
                t.not_found,
                t.changed_inactive
            ),
            Ok(Err(why)) => format!("wrong {why}"),
            Err(_) => "panic".to_owned(),
        };
        println!("SWEEP {pos} {line}");
        let _ = std::io::stdout().flush();
    }
}
