//! Test fixtures: a database driven by a manual clock, on the backend of the test binary
//! (`crate::BACKEND`): a temp file for `integration`, a fresh schema of the throw-away
//! PostgreSQL server for `postgres`, which runs the backend-independent modules again.

use std::sync::Arc;
use tokendb::{Config, ConfigBuilder, ManualClock, MasterKey, SweeperConfig, TokenDb};
use tokendb_tests::place::Place;

/// Which backend a test binary's fixtures use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)] // each binary names one
pub(crate) enum Backend {
    /// A redb file in a temp dir.
    File,
    /// A fresh schema on the test PostgreSQL server.
    Postgres,
}

/// Where a new fixture's database goes.
fn place_in(dir: &tempfile::TempDir) -> Place {
    match crate::BACKEND {
        Backend::File => Place::File(dir.path().join("tokens.tdb")),
        Backend::Postgres => Place::fresh_postgres(),
    }
}

/// 2027-01-15T08:00:00Z: an arbitrary fixed start so tests never read the wall clock.
pub(crate) const T0: u64 = 1_800_000_000_000;
pub(crate) const MINUTE: u64 = 60_000;
pub(crate) const HOUR: u64 = 60 * MINUTE;
pub(crate) const DAY: u64 = 24 * HOUR;

/// A database in a temp dir, a manual clock at [`T0`], and the master key.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub master: MasterKey,
    pub db: TokenDb,
    /// Where `db` lives: [`Fixture::reopen`] opens it again.
    pub place: Place,
}

impl Fixture {
    /// Default config, sweeper thread off (tests sweep by hand).
    pub(crate) fn new() -> Self {
        Self::with(|b| b)
    }

    /// Config from a builder tweak; the clock and a disabled background sweeper are set first.
    pub(crate) fn with(tweak: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let master = MasterKey::generate();
        let config = tweak(Self::base(&clock)).build().unwrap();
        let place = place_in(&dir);
        let db = place.create(&master, config).unwrap();
        Self {
            dir,
            clock,
            master,
            db,
            place,
        }
    }

    /// Opens the fixture's database again (a second handle on PostgreSQL, where several may
    /// be open; on a file, close `db` first).
    pub(crate) fn reopen(&self, config: Config) -> tokendb::Result<TokenDb> {
        self.place.open(&self.master, config)
    }

    pub(crate) fn base(clock: &Arc<ManualClock>) -> ConfigBuilder {
        Config::builder()
            .clock(clock.clone())
            .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
    }

    pub(crate) fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("tokens.tdb")
    }

    pub(crate) fn advance(&self, ms: u64) {
        self.clock.advance(ms);
    }

    pub(crate) fn set(&self, ms: u64) {
        self.clock.set(ms);
    }
}

#[allow(clippy::unwrap_used)] // test fixture: a failure to set up is a test failure
impl Fixture {
    /// As [`Fixture::with`], but the file lives on a RAM-backed file system (`/dev/shm`) when the
    /// machine has one: still a real redb file, but a commit costs no disk flush. For tests that
    /// make thousands of commits to prove logic rather than durability.
    pub(crate) fn on_tmpfs(tweak: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let master = MasterKey::generate();
        let config = tweak(Self::base(&clock)).build().unwrap();
        let place = place_in(&dir);
        let db = place.create(&master, config).unwrap();
        Self {
            dir,
            clock,
            master,
            db,
            place,
        }
    }
}

// ---- Added for the crash, durability and sweeper modules ----

use std::collections::BTreeMap;
use tokendb::{FamilyId, Grant};
use tokendb_core::{AccessKey, AccessRecord, FamilyRecord};
use tokendb_store::{Entry, IndexEntry, ScanItem, Store};

/// The redb file under `db`, for white-box checks of its tables (`test-hooks`). Brings
/// [`tokendb_backend::Backend`]'s methods (the typed writes, the key ring) with it.
pub(crate) fn file(db: &TokenDb) -> &Arc<Store> {
    db.redb_file_for_tests().expect("a redb-file database")
}

/// A grant for subject `sub-{i}` of client `client-{i % 3}`.
pub(crate) fn grant(i: usize) -> Grant {
    Grant::new(
        format!("sub-{i}"),
        format!("client-{}", i % 3),
        "openid offline_access",
    )
    .unwrap()
}

/// Every record and every index entry of a store: one scan of each (run it while no one writes).
pub(crate) struct Contents {
    pub families: BTreeMap<FamilyId, FamilyRecord>,
    /// Access tokens by their storage key (deadline ‖ token id), so in deadline order.
    pub tokens: BTreeMap<[u8; 40], AccessRecord>,
    pub index: Vec<IndexEntry>,
}

impl Contents {
    /// Everything under `db`, whichever its backend.
    pub(crate) fn of(db: &TokenDb, place: &Place) -> Self {
        match place {
            Place::File(_) => Self::read(file(db)),
            Place::Postgres { url, schema } => {
                Self::read_postgres(url, schema, &db.keys_for_tests())
            }
        }
    }

    /// Reads every row of a PostgreSQL schema, decoding each record under `keys`, and turns
    /// its index columns into the entries the redb backend would hold for them (a family's
    /// `deadline` column is its `deadlines` entry, an `owners` row its subject and client
    /// entries, a token's `family` column its `family_tokens` entry, ...), so that
    /// [`Contents::index_problems`] checks both backends by the same rules.
    pub(crate) fn read_postgres(url: &str, schema: &str, keys: &tokendb_core::KeyRing) -> Self {
        use tokendb_core::IndexHash;
        let mut sql = postgres::Client::connect(url, postgres::NoTls).unwrap();
        sql.batch_execute(&format!("SET search_path = {schema}"))
            .unwrap();
        let hash = |b: &[u8]| IndexHash::from_slice(b).expect("an index hash");
        let mut families = BTreeMap::new();
        let mut tokens = BTreeMap::new();
        let mut index = Vec::new();
        for row in sql
            .query("SELECT id, deadline, record FROM tokendb_families", &[])
            .unwrap()
        {
            let id = FamilyId::from_slice(row.get::<_, &[u8]>(0)).unwrap();
            let rec = FamilyRecord::decode(row.get::<_, &[u8]>(2), &id, keys)
                .unwrap_or_else(|e| panic!("family {id}: {e}"));
            if let Some(d) = row.get::<_, Option<i64>>(1) {
                index.push(IndexEntry::Deadline(
                    u64::try_from(d).unwrap(),
                    Entry::Family(id),
                ));
            }
            families.insert(id, rec);
        }
        for row in sql
            .query("SELECT subject, client, family FROM tokendb_owners", &[])
            .unwrap()
        {
            let f = Entry::Family(FamilyId::from_slice(row.get::<_, &[u8]>(2)).unwrap());
            index.push(IndexEntry::Subject(hash(row.get(0)), f));
            index.push(IndexEntry::Client(hash(row.get(1)), f));
        }
        for row in sql
            .query(
                "SELECT key, family, subject, client, record FROM tokendb_tokens",
                &[],
            )
            .unwrap()
        {
            let key = AccessKey::from_slice(row.get::<_, &[u8]>(0)).unwrap();
            let rec = AccessRecord::decode(row.get::<_, &[u8]>(4), &key, keys)
                .unwrap_or_else(|e| panic!("token {key:?}: {e}"));
            match row.get::<_, Option<&[u8]>>(1) {
                Some(f) => index.push(IndexEntry::FamilyToken(
                    FamilyId::from_slice(f).unwrap(),
                    key,
                )),
                None => {
                    index.push(IndexEntry::Subject(hash(row.get(2)), Entry::Token(key)));
                    index.push(IndexEntry::Client(hash(row.get(3)), Entry::Token(key)));
                }
            }
            tokens.insert(key.to_bytes(), rec);
        }
        for row in sql
            .query("SELECT family, generation, due FROM tokendb_grace", &[])
            .unwrap()
        {
            let f = FamilyId::from_slice(row.get::<_, &[u8]>(0)).unwrap();
            let g = u64::try_from(row.get::<_, i64>(1)).unwrap();
            let due = u64::try_from(row.get::<_, i64>(2)).unwrap();
            index.push(IndexEntry::Deadline(due, Entry::Grace(f, g)));
        }
        for row in sql
            .query("SELECT id, deadline FROM tokendb_proofs", &[])
            .unwrap()
        {
            let id = tokendb_core::ProofId::from_slice(row.get::<_, &[u8]>(0)).unwrap();
            let d = u64::try_from(row.get::<_, i64>(1)).unwrap();
            index.push(IndexEntry::Deadline(d, Entry::Proof(id)));
        }
        Self {
            families,
            tokens,
            index,
        }
    }

    /// Reads everything; every record must authenticate.
    pub(crate) fn read(store: &Store) -> Self {
        let mut families = BTreeMap::new();
        let mut tokens = BTreeMap::new();
        store
            .scan(|item| match item {
                ScanItem::Family(id, rec) => {
                    families.insert(id, rec.unwrap_or_else(|e| panic!("family {id}: {e}")));
                }
                ScanItem::Token(id, rec) => {
                    tokens.insert(
                        id.to_bytes(),
                        rec.unwrap_or_else(|e| panic!("token {id:?}: {e}")),
                    );
                }
            })
            .unwrap();
        let mut index = Vec::new();
        store.scan_indexes(|e| index.push(e)).unwrap();
        Self {
            families,
            tokens,
            index,
        }
    }

    /// Nothing at all: no record, no index entry (grace timers included).
    pub(crate) fn is_empty(&self) -> bool {
        self.families.is_empty() && self.tokens.is_empty() && self.index.is_empty()
    }

    /// Grace timers (`deadlines` entries that erase a kept successor when its window ends).
    pub(crate) fn grace_timers(&self) -> Vec<(u64, FamilyId, u64)> {
        self.index
            .iter()
            .filter_map(|e| match e {
                IndexEntry::Deadline(d, Entry::Grace(f, g)) => Some((*d, *f, *g)),
                _ => None,
            })
            .collect()
    }

    /// Where records and indexes disagree, in words; empty when every record has exactly its
    /// index entries and every index entry points at a record that agrees with it:
    /// - a family has one `deadlines` entry, at min(absolute, idle), and its `by_subject` and
    ///   `by_client` entries; if it keeps a grace slot, a grace timer for its generation;
    /// - an access token has no `deadlines` entry (its key is its deadline, and equals its
    ///   record's); a family-bound one has its `family_tokens` entry (and its family exists), a
    ///   standalone one its subject and client token-index entries;
    /// - no entry is malformed or points at a missing or different record, except that a
    ///   token-index entry may outlive its token if the token was swept (its deadline is not after
    ///   the first remaining token's). Grace timers are timers, not index entries: one may outlive
    ///   its family or generation until it fires.
    pub(crate) fn index_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut fam_deadlines: BTreeMap<FamilyId, Vec<u64>> = BTreeMap::new();
        let mut has = std::collections::HashSet::new();
        let first_left = self
            .tokens
            .keys()
            .next()
            .map(|k| AccessKey::from_bytes(k).deadline);
        let key = |e: &IndexEntry| -> Vec<u8> {
            let entry = |out: &mut Vec<u8>, en: &Entry| match en {
                Entry::Family(f) => out.extend([&[1][..], f.as_bytes()].concat()),
                Entry::Token(t) => out.extend([&[2][..], &t.to_bytes()].concat()),
                Entry::Grace(f, g) => {
                    out.extend([&[3][..], f.as_bytes(), &g.to_be_bytes()].concat())
                }
                Entry::Proof(p) => out.extend([&[4][..], p.as_bytes()].concat()),
            };
            let mut out = Vec::new();
            match e {
                IndexEntry::FamilyToken(f, t) => {
                    out.extend([&[b'f'][..], f.as_bytes(), &t.to_bytes()].concat())
                }
                IndexEntry::Deadline(d, en) => {
                    out.extend([&[b'd'][..], &d.to_be_bytes()].concat());
                    entry(&mut out, en);
                }
                IndexEntry::Subject(h, en) | IndexEntry::Client(h, en) => {
                    out.push(if matches!(e, IndexEntry::Subject(..)) {
                        b's'
                    } else {
                        b'c'
                    });
                    out.extend(h.as_bytes());
                    entry(&mut out, en);
                }
                IndexEntry::Malformed(_) => out.push(b'm'),
            }
            out
        };
        for e in &self.index {
            match e {
                IndexEntry::Malformed(table) => {
                    problems.push(format!("malformed entry in {table}"))
                }
                IndexEntry::Deadline(d, Entry::Family(f)) => {
                    fam_deadlines.entry(*f).or_default().push(*d)
                }
                IndexEntry::Deadline(d, Entry::Token(t)) => {
                    problems.push(format!("deadline entry {d} for access token {t:?}"))
                }
                IndexEntry::Deadline(..) => {}
                IndexEntry::FamilyToken(f, t) => match self.tokens.get(&t.to_bytes()) {
                    Some(rec) if rec.family == Some(*f) => {}
                    Some(rec) => problems.push(format!(
                        "family_tokens {f} -> {t:?}, but the token says {:?}",
                        rec.family
                    )),
                    None => problems.push(format!("family_tokens {f} -> {t:?}: no such token")),
                },
                IndexEntry::Subject(h, entry) | IndexEntry::Client(h, entry) => {
                    let subject = matches!(e, IndexEntry::Subject(..));
                    let ok = match entry {
                        Entry::Family(f) => self
                            .families
                            .get(f)
                            .is_some_and(|r| *h == if subject { r.subject } else { r.client }),
                        Entry::Token(t) => match self.tokens.get(&t.to_bytes()) {
                            Some(r) => {
                                r.family.is_none()
                                    && *h == if subject { r.subject } else { r.client }
                            }
                            // Swept, waiting for its bucket to end.
                            None => first_left.is_none_or(|d| t.deadline <= d),
                        },
                        Entry::Grace(..) | Entry::Proof(_) => false,
                    };
                    if !ok {
                        problems.push(format!("dangling or wrong {e:?}"));
                    }
                }
            }
            has.insert(key(e));
        }
        for (f, ds) in &fam_deadlines {
            if !self.families.contains_key(f) {
                problems.push(format!("deadline entries {ds:?} for missing family {f}"));
            }
        }
        let grace = self.grace_timers();
        for (id, rec) in &self.families {
            let ds = fam_deadlines.get(id).cloned().unwrap_or_default();
            if ds != [rec.deadline()] {
                problems.push(format!(
                    "family {id}: deadline entries {ds:?}, record says {}",
                    rec.deadline()
                ));
            }
            let entry = Entry::Family(*id);
            for want in [
                IndexEntry::Subject(rec.subject, entry),
                IndexEntry::Client(rec.client, entry),
            ] {
                if !has.contains(&key(&want)) {
                    problems.push(format!("family {id}: missing {want:?}"));
                }
            }
            if !rec.grace.is_empty()
                && !grace
                    .iter()
                    .any(|(_, f, g)| f == id && *g == rec.generation)
            {
                problems.push(format!(
                    "family {id}: grace slot kept with no timer to erase it"
                ));
            }
        }
        for (t, rec) in &self.tokens {
            let id = AccessKey::from_bytes(t);
            if id.deadline != rec.deadline {
                problems.push(format!(
                    "token {id:?}: keyed at deadline {}, record says {}",
                    id.deadline, rec.deadline
                ));
            }
            let entry = Entry::Token(id);
            let wants = match rec.family {
                Some(f) => {
                    if !self.families.contains_key(&f) {
                        problems.push(format!("token {id:?} of missing family {f}"));
                    }
                    vec![IndexEntry::FamilyToken(f, id)]
                }
                None => vec![
                    IndexEntry::Subject(rec.subject, entry),
                    IndexEntry::Client(rec.client, entry),
                ],
            };
            for want in wants {
                if !has.contains(&key(&want)) {
                    problems.push(format!("token {id:?}: missing {want:?}"));
                }
            }
        }
        problems
    }

    /// Panics with every disagreement between records and indexes.
    pub(crate) fn assert_exact(&self) {
        let problems = self.index_problems();
        assert!(
            problems.is_empty(),
            "index and records disagree:\n{}",
            problems.join("\n")
        );
    }
}

/// A small deterministic generator (SplitMix64) for randomised tests; seed it from
/// [`random_seed`] and print the seed, so a failure can be replayed.
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// A fresh seed (from the standard library's per-process random hasher keys), or the value of
/// `TOKENDB_TEST_SEED` to replay a run.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if let Some(s) = std::env::var("TOKENDB_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return s;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

/// Records in the file (families + access tokens).
pub(crate) fn records(db: &TokenDb) -> usize {
    let mut n = 0;
    file(db)
        .scan(|item| {
            if matches!(
                item,
                tokendb_store::ScanItem::Family(..) | tokendb_store::ScanItem::Token(..)
            ) {
                n += 1;
            }
        })
        .unwrap();
    n
}
