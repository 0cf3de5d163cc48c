//! The integrity scan, [`Store::verify`]: every record authenticated and opened, every index
//! entry checked against its record, and every record against the entries it needs.

use super::Snap;
use crate::Store;
use crate::error::RedbResult;
use crate::error::Result;
use crate::tables::{
    Entry, FT_KEY_LEN, IX_KEY_LEN, TX_KEY_LEN, dl_key, dl_parse, ft_key, ix_key, ix_parse,
    recent_parse, tx_key, tx_parse,
};
use redb::ReadableTable;
use std::collections::{BTreeMap, HashSet};
use tokendb_core::ids::{FAMILY_ID_LEN, INDEX_HASH_LEN};
use tokendb_core::{
    AccessKey, AccessRecord, FamilyId, FamilyRecord, IndexHash, KeyId, KeyRing, ProofId,
};

/// One inconsistency found by [`Store::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The table it was found in.
    pub table: &'static str,
    /// The record or entry, readable: `family <hex>`, `token <hex prefix>…`, with a deadline
    /// for `deadlines` entries.
    pub subject: String,
    /// What is wrong, and what it breaks.
    pub what: String,
}

/// The result of [`Store::verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Family records scanned.
    pub families: u64,
    /// Access token records scanned.
    pub access_tokens: u64,
    /// Index entries scanned.
    pub index_entries: u64,
    /// Problems found (all of them, counted).
    pub problem_count: u64,
    /// The first problems found, up to the limit asked for.
    pub problems: Vec<Problem>,
    /// Authenticated records per sealing key id.
    pub records_by_key: BTreeMap<KeyId, u64>,
}

impl VerifyReport {
    /// Whether the scan found nothing wrong.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, max: usize, table: &'static str, subject: String, what: String) {
        self.problem_count += 1;
        if self.problems.len() < max {
            self.problems.push(Problem {
                table,
                subject,
                what,
            });
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn family_name(f: &FamilyId) -> String {
    format!("family {f}")
}

fn token_name(t: &AccessKey) -> String {
    // Token ids are keyed hashes, not secrets; a prefix is enough to tell records apart.
    format!(
        "token {}… (deadline {})",
        hex(t.id.as_bytes().get(..8).unwrap_or_default()),
        t.deadline
    )
}

fn entry_name(e: &Entry) -> String {
    match e {
        Entry::Family(f) => family_name(f),
        Entry::Token(t) => token_name(t),
        Entry::Grace(f, g) => format!("grace window of family {f} generation {g}"),
        Entry::Proof(p) => format!("proof {}…", hex(p.as_bytes().get(..8).unwrap_or_default())),
    }
}

impl Store {
    /// The full integrity scan, on one snapshot: authenticates every record and opens every
    /// sealed body and grace slot; checks that each record's keyed subject and client hashes
    /// match its sealed body; checks every index entry against its record and every record
    /// against the index entries it must have. A family needs one `deadlines` entry at
    /// min(absolute, idle), a grace entry while its grace slot is filled, and `by_subject` and
    /// `by_client` entries; an access token (keyed by its deadline, so it needs no `deadlines`
    /// entry) needs a `family_tokens` entry and a live family if it is tied to one (revoked
    /// with it, never outliving its deadline), and `subject_tokens` and `client_tokens` entries
    /// if standalone. A token-index entry whose token is gone is allowed only if that token was
    /// swept (its deadline is not after the first remaining token's) and its bucket has not
    /// ended. Keeps the first `max_problems` problems and counts all of them.
    ///
    /// Read-only: it repairs nothing.
    ///
    /// # Errors
    /// Storage errors (a structurally broken file); every damaged record or entry is a
    /// [`Problem`] instead.
    pub fn verify(&self, max_problems: usize) -> Result<VerifyReport> {
        self.contained("scanning the file", || {
            let keys = self.shared.keys();
            self.with_tables(|t| {
                let mut r = VerifyReport::default();
                let grace = verify_indexes(t, &keys, &mut r, max_problems)?;
                verify_families(t, &keys, &grace, &mut r, max_problems)?;
                verify_tokens(t, &keys, &mut r, max_problems)?;
                verify_proofs(t, &mut r, max_problems)?;
                Ok(r)
            })
        })
    }
}

/// Every proof of the replay cache has its `deadlines` entry (the sweeper finds it there); the
/// entries were checked against the proofs with the rest of `deadlines`.
fn verify_proofs(t: &Snap, r: &mut VerifyReport, max: usize) -> Result<()> {
    let Some(proofs) = &t.proofs else {
        return Ok(());
    };
    for item in proofs.iter().db()? {
        let (k, v) = item.db()?;
        let id = ProofId::from_bytes(*k.value());
        let entry = Entry::Proof(id);
        if t.deadlines.get(&dl_key(v.value(), &entry)).db()?.is_none() {
            r.problem(
                max,
                "proofs",
                entry_name(&entry),
                format!(
                    "no `deadlines` entry at {}: the sweeper would never delete it",
                    v.value()
                ),
            );
        }
    }
    Ok(())
}

/// Index entries against records. Returns the grace entries seen, (family, generation).
fn verify_indexes(
    t: &Snap,
    keys: &KeyRing,
    r: &mut VerifyReport,
    max: usize,
) -> Result<HashSet<(FamilyId, u64)>> {
    let mut grace = HashSet::new();
    for item in t.deadlines.iter().db()? {
        let (k, _) = item.db()?;
        r.index_entries += 1;
        let Some((deadline, entry)) = dl_parse(k.value()) else {
            r.problem(
                max,
                "deadlines",
                hex(k.value()),
                "entry does not parse".into(),
            );
            continue;
        };
        let name = format!("{} at {deadline}", entry_name(&entry));
        let actual = match entry {
            Entry::Family(f) => match t.family(&f, keys)? {
                None => None,
                Some(Ok(rec)) => Some(Some(rec.deadline())),
                Some(Err(_)) => Some(None), // reported with the record
            },
            Entry::Token(_) => {
                r.problem(
                    max,
                    "deadlines",
                    name,
                    "access tokens are not filed here (their keys carry their deadlines)".into(),
                );
                continue;
            }
            Entry::Grace(f, g) => {
                grace.insert((f, g));
                // A grace entry may outlive its family (the family can expire inside the
                // window); the sweeper drops it then. It must not name a future generation.
                if let Some(Ok(rec)) = t.family(&f, keys)?
                    && g > rec.generation
                {
                    r.problem(
                        max,
                        "deadlines",
                        name,
                        format!(
                            "names generation {g}, but the family is at generation {}",
                            rec.generation
                        ),
                    );
                }
                continue;
            }
            Entry::Proof(p) => t.proof(&p)?.map(Some),
        };
        match actual {
            None => r.problem(
                max,
                "deadlines",
                name,
                "points at a record that does not exist".into(),
            ),
            Some(Some(d)) if d != deadline => r.problem(
                max,
                "deadlines",
                name,
                format!("the record's deadline is {d}: the entry is stale"),
            ),
            Some(_) => {}
        }
    }
    for item in t.family_tokens.iter().db()? {
        let (k, _) = item.db()?;
        r.index_entries += 1;
        let key: &[u8; FT_KEY_LEN] = k.value();
        let parsed = key
            .split_at_checked(FAMILY_ID_LEN)
            .and_then(|(a, b)| Some((FamilyId::from_slice(a)?, AccessKey::from_slice(b)?)));
        let Some((f, id)) = parsed else {
            r.problem(
                max,
                "family_tokens",
                hex(key),
                "entry does not parse".into(),
            );
            continue;
        };
        let name = format!("{} → {}", family_name(&f), token_name(&id));
        match t.token(&id, keys)? {
            None => r.problem(
                max,
                "family_tokens",
                name,
                "points at an access token that does not exist".into(),
            ),
            Some(Ok(rec)) if rec.family != Some(f) => r.problem(
                max,
                "family_tokens",
                name,
                "the access token is not tied to this family".into(),
            ),
            Some(_) => {}
        }
    }
    for (table, name, subject_index) in [
        (&t.by_subject, "by_subject", true),
        (&t.by_client, "by_client", false),
    ] {
        for item in table.iter().db()? {
            let (k, _) = item.db()?;
            r.index_entries += 1;
            let key: &[u8; IX_KEY_LEN] = k.value();
            let hash = key.get(..INDEX_HASH_LEN).and_then(IndexHash::from_slice);
            let (Some(h), Some(entry)) = (hash, ix_parse(key)) else {
                r.problem(max, name, hex(key), "entry does not parse".into());
                continue;
            };
            let label = entry_name(&entry);
            let pick = |s: IndexHash, c: IndexHash| if subject_index { s } else { c };
            let what = match entry {
                Entry::Family(f) => match t.family(&f, keys)? {
                    None => Some("points at a family that does not exist"),
                    Some(Ok(rec)) if pick(rec.subject, rec.client) != h => {
                        Some("the family's hash differs: the entry is filed under another key")
                    }
                    Some(_) => None,
                },
                Entry::Token(_) => {
                    Some("access tokens are indexed in `subject_tokens`/`client_tokens`, not here")
                }
                Entry::Grace(..) => Some("grace entries belong in `deadlines` only"),
                Entry::Proof(_) => Some("proof entries belong in `deadlines` only"),
            };
            if let Some(w) = what {
                r.problem(max, name, label, w.into());
            }
        }
    }
    // Every token keyed below the first remaining one was swept (and some at its deadline may
    // have been, by a batch that stopped among equal deadlines).
    let first_left = t
        .tokens
        .first()
        .db()?
        .map(|(k, _)| AccessKey::from_bytes(k.value()).deadline);
    for (table, name, subject_index) in [
        (&t.subject_tokens, "subject_tokens", true),
        (&t.client_tokens, "client_tokens", false),
    ] {
        for item in table.iter().db()? {
            let (k, _) = item.db()?;
            r.index_entries += 1;
            let key: &[u8; TX_KEY_LEN] = k.value();
            let Some((_, h, tref)) = tx_parse(key) else {
                r.problem(max, name, hex(key), "entry does not parse".into());
                continue;
            };
            let pick = |s: IndexHash, c: IndexHash| if subject_index { s } else { c };
            // The entry names its token by deadline and id prefix: it is right if one token
            // it may name is standalone and filed under its hash.
            let (lo, hi) = tref.range();
            let mut found = false;
            let mut what = None;
            for item in t.tokens.range(&lo..=&hi).db()? {
                let id = AccessKey::from_bytes(item.db()?.0.value());
                found = true;
                what = match t.token(&id, keys)? {
                    Some(Ok(rec)) if rec.family.is_some() => Some(
                        "the access token is tied to a family; only standalone tokens are indexed here",
                    ),
                    Some(Ok(rec)) if pick(rec.subject, rec.client) != h => {
                        Some("the token's hash differs: the entry is filed under another key")
                    }
                    _ => None,
                };
                if what.is_none() {
                    break;
                }
            }
            if !found && first_left.is_some_and(|d| tref.deadline > d) {
                what = Some("points at an access token that does not exist");
            }
            if let Some(w) = what {
                r.problem(max, name, token_name(&tref.placeholder()), w.into());
            }
        }
    }
    for item in t.recent_tokens.iter().db()? {
        let (k, v) = item.db()?;
        r.index_entries += 2;
        let id = AccessKey::from_bytes(k.value());
        let Some((s, c)) = recent_parse(v.value()) else {
            r.problem(
                max,
                "recent_tokens",
                token_name(&id),
                "entry does not parse".into(),
            );
            continue;
        };
        let what = match t.token(&id, keys)? {
            None if first_left.is_none_or(|d| id.deadline <= d) => None, // swept
            None => Some("points at an access token that does not exist"),
            Some(Ok(rec)) if rec.family.is_some() => Some(
                "the access token is tied to a family; only standalone tokens are indexed here",
            ),
            Some(Ok(rec)) if rec.subject != s || rec.client != c => {
                Some("the token's hashes differ: the entry is filed under other keys")
            }
            Some(_) => None,
        };
        if let Some(w) = what {
            r.problem(max, "recent_tokens", token_name(&id), w.into());
        }
    }
    Ok(grace)
}

/// Reports a record's sealed body that does not open, or whose subject and client do not hash
/// to the record's index hashes.
fn check_body(
    r: &mut VerifyReport,
    max: usize,
    table: &'static str,
    name: &str,
    body: core::result::Result<tokendb_core::RecordBody, tokendb_core::CoreError>,
    keys: &KeyRing,
    (subject, client): (&IndexHash, &IndexHash),
) {
    match body {
        Ok(body) => {
            if let Some(w) = check_hashes(keys, &body, subject, client) {
                r.problem(max, table, name.to_owned(), w.into());
            }
        }
        Err(e) => r.problem(
            max,
            table,
            name.to_owned(),
            format!("sealed body does not open: {e}"),
        ),
    }
}

fn check_hashes(
    keys: &KeyRing,
    body: &tokendb_core::RecordBody,
    subject: &IndexHash,
    client: &IndexHash,
) -> Option<&'static str> {
    if keys.subject_hash(&body.subject) != *subject {
        Some("its subject hash does not match the sealed subject: revoke --subject would miss it")
    } else if keys.client_hash(&body.client_id) != *client {
        Some("its client hash does not match the sealed client id: revoke --client would miss it")
    } else {
        None
    }
}

fn verify_families(
    t: &Snap,
    keys: &KeyRing,
    grace: &HashSet<(FamilyId, u64)>,
    r: &mut VerifyReport,
    max: usize,
) -> Result<()> {
    for item in t.families.iter().db()? {
        let (k, v) = item.db()?;
        r.families += 1;
        let id = FamilyId::from_bytes(*k.value());
        let name = family_name(&id);
        let rec = match FamilyRecord::decode(v.value(), &id, keys) {
            Ok(rec) => rec,
            Err(e) => {
                r.problem(max, "families", name, format!("record is unreadable: {e}"));
                continue;
            }
        };
        *r.records_by_key.entry(rec.key_id).or_default() += 1;
        let body = rec.open_body(&id, keys);
        check_body(
            r,
            max,
            "families",
            &name,
            body,
            keys,
            (&rec.subject, &rec.client),
        );
        if !rec.grace.is_empty() {
            if let Err(e) = rec.grace_secret(&id, keys) {
                r.problem(
                    max,
                    "families",
                    name.clone(),
                    format!("grace slot does not open: {e}"),
                );
            }
            if !grace.contains(&(id, rec.generation)) {
                r.problem(
                    max,
                    "families",
                    name.clone(),
                    "keeps a successor secret in its grace slot with no grace entry in `deadlines`: it would never be erased".into(),
                );
            }
        }
        if rec.generation == 0 {
            r.problem(max, "families", name.clone(), "generation is 0".into());
        }
        if rec.idle_deadline > rec.absolute_deadline {
            r.problem(
                max,
                "families",
                name.clone(),
                format!(
                    "idle deadline {} is after the absolute deadline {}",
                    rec.idle_deadline, rec.absolute_deadline
                ),
            );
        }
        let entry = Entry::Family(id);
        if t.deadlines
            .get(&dl_key(rec.deadline(), &entry))
            .db()?
            .is_none()
        {
            r.problem(
                max,
                "families",
                name.clone(),
                format!(
                    "no `deadlines` entry at its deadline {}: the sweeper would never delete it",
                    rec.deadline()
                ),
            );
        }
        if t.by_subject
            .get(&ix_key(&rec.subject, &entry))
            .db()?
            .is_none()
        {
            r.problem(
                max,
                "families",
                name.clone(),
                "no `by_subject` entry: revoke --subject would miss it".into(),
            );
        }
        if t.by_client
            .get(&ix_key(&rec.client, &entry))
            .db()?
            .is_none()
        {
            r.problem(
                max,
                "families",
                name,
                "no `by_client` entry: revoke --client would miss it".into(),
            );
        }
    }
    Ok(())
}

fn verify_tokens(t: &Snap, keys: &KeyRing, r: &mut VerifyReport, max: usize) -> Result<()> {
    for item in t.tokens.iter().db()? {
        let (k, v) = item.db()?;
        r.access_tokens += 1;
        let id = AccessKey::from_bytes(k.value());
        let name = token_name(&id);
        let rec = match AccessRecord::decode(v.value(), &id, keys) {
            Ok(rec) => rec,
            Err(e) => {
                r.problem(max, "tokens", name, format!("record is unreadable: {e}"));
                continue;
            }
        };
        *r.records_by_key.entry(rec.key_id).or_default() += 1;
        let body = rec.open_body(&id, keys);
        check_body(
            r,
            max,
            "tokens",
            &name,
            body,
            keys,
            (&rec.subject, &rec.client),
        );
        match rec.family {
            Some(f) => {
                match t.family(&f, keys)? {
                    None => r.problem(
                        max,
                        "tokens",
                        name.clone(),
                        format!("tied to {}, which does not exist", family_name(&f)),
                    ),
                    Some(Ok(fam)) => {
                        if rec.deadline > fam.absolute_deadline {
                            r.problem(
                                max,
                                "tokens",
                                name.clone(),
                                format!(
                                    "its deadline {} is after its family's absolute deadline {}",
                                    rec.deadline, fam.absolute_deadline
                                ),
                            );
                        }
                        if fam.state.is_revoked() && !rec.state.is_revoked() {
                            r.problem(
                                max,
                                "tokens",
                                name.clone(),
                                "its family is revoked but it is still active".into(),
                            );
                        }
                    }
                    Some(Err(_)) => {} // the family's own problem is reported with it
                }
                if t.family_tokens.get(&ft_key(&f, &id)).db()?.is_none() {
                    r.problem(
                        max,
                        "tokens",
                        name,
                        "no `family_tokens` entry: revoking its family would miss it".into(),
                    );
                }
            }
            None => {
                // Not merged yet: its recent entry names both hashes.
                let recent = t
                    .recent_tokens
                    .get(&id.to_bytes())
                    .db()?
                    .and_then(|v| recent_parse(v.value()));
                if let Some((s, c)) = recent {
                    if s != rec.subject || c != rec.client {
                        r.problem(
                            max,
                            "tokens",
                            name,
                            "its `recent_tokens` entry names other hashes: revoke would miss it"
                                .into(),
                        );
                    }
                    continue;
                }
                if t.subject_tokens
                    .get(&tx_key(&rec.subject, &id))
                    .db()?
                    .is_none()
                {
                    r.problem(
                        max,
                        "tokens",
                        name.clone(),
                        "no `subject_tokens` entry: revoke --subject would miss it".into(),
                    );
                }
                if t.client_tokens
                    .get(&tx_key(&rec.client, &id))
                    .db()?
                    .is_none()
                {
                    r.problem(
                        max,
                        "tokens",
                        name,
                        "no `client_tokens` entry: revoke --client would miss it".into(),
                    );
                }
            }
        }
    }
    Ok(())
}
