//! Table definitions and the fixed-width keys of the indexes.

use redb::TableDefinition;
use tokendb_core::ids::{ACCESS_KEY_LEN, FAMILY_ID_LEN, INDEX_HASH_LEN, PROOF_ID_LEN};
use tokendb_core::{AccessKey, FamilyId, IndexHash, ProofId};

/// family id → encoded [`tokendb_core::FamilyRecord`].
pub(crate) const FAMILIES: TableDefinition<'_, &[u8; FAMILY_ID_LEN], &[u8]> =
    TableDefinition::new("families");
/// access key (deadline ‖ token id) → encoded [`tokendb_core::AccessRecord`]. Ordered by
/// deadline, so this table is its own expiry index: access tokens have no `deadlines` entries.
pub(crate) const TOKENS: TableDefinition<'_, &[u8; ACCESS_KEY_LEN], &[u8]> =
    TableDefinition::new("tokens");
/// family id ‖ access key → (): the access tokens of a family.
pub(crate) const FAMILY_TOKENS: TableDefinition<'_, &[u8; FT_KEY_LEN], ()> =
    TableDefinition::new("family_tokens");
/// deadline (u64 BE) ‖ kind ‖ id (40, zero-padded) → (): when families expire and grace
/// windows end.
pub(crate) const DEADLINES: TableDefinition<'_, &[u8; DL_KEY_LEN], ()> =
    TableDefinition::new("deadlines");
/// subject hash ‖ kind ‖ id → (): families by subject.
pub(crate) const BY_SUBJECT: TableDefinition<'_, &[u8; IX_KEY_LEN], ()> =
    TableDefinition::new("by_subject");
/// client hash ‖ kind ‖ id → (): families by client.
pub(crate) const BY_CLIENT: TableDefinition<'_, &[u8; IX_KEY_LEN], ()> =
    TableDefinition::new("by_client");
/// deadline bucket (u32 BE, [`BUCKET_SHIFT`]) ‖ subject hash ‖ deadline (u64 BE) ‖ the first
/// [`ID_PREFIX`] bytes of the token id → (): standalone access tokens by subject, merged from
/// [`RECENT_TOKENS`]. The entry names its token by deadline and id prefix, found with a short
/// range read of `tokens` ([`TokenRef::range`]); two tokens of one millisecond sharing a prefix
/// (2^-64 per pair) are both found, and revocation checks each record's own hash. Bucketed by deadline so that the
/// sweeper drops whole ended buckets as contiguous runs; revoke-by-subject probes each live
/// bucket. Format 3 (format 2's `subject_tokens` had 2^16 ms buckets and took every issue
/// directly; it is converted when such a file is opened).
pub(crate) const SUBJECT_TOKENS: TableDefinition<'_, &[u8; TX_KEY_LEN], ()> =
    TableDefinition::new("subject_tokens.v3");
/// deadline bucket ‖ client hash ‖ access key → (): standalone access tokens by client, like
/// [`SUBJECT_TOKENS`].
pub(crate) const CLIENT_TOKENS: TableDefinition<'_, &[u8; TX_KEY_LEN], ()> =
    TableDefinition::new("client_tokens.v3");
/// access key → subject hash ‖ client hash: standalone access tokens issued since the last
/// merge into [`SUBJECT_TOKENS`]/[`CLIENT_TOKENS`]. Keyed like `tokens` (deadline first), so the
/// entries of one group commit land side by side at the tail of one leaf instead of at a random
/// place in each index; revocation scans the whole table (at most about [`MERGE_AT`] entries)
/// besides probing the indexes, and the sweeper drops its expired head like `tokens`'.
pub(crate) const RECENT_TOKENS: TableDefinition<'_, &[u8; ACCESS_KEY_LEN], &[u8; RECENT_LEN]> =
    TableDefinition::new("recent_tokens");
/// proof id (a keyed hash of a DPoP key's thumbprint and a proof's `jti`) → deadline (u64):
/// the replay cache. Each entry is also filed in `deadlines` (kind [`Entry::Proof`]), so the
/// sweeper deletes it once its proof could no longer be accepted anyway. Created by the first
/// write transaction of a build that has it; files of earlier builds gain it empty.
pub(crate) const PROOFS: TableDefinition<'_, &[u8; PROOF_ID_LEN], u64> =
    TableDefinition::new("proofs");
/// name → value: format version, wrapped data keys, current key id.
pub(crate) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

pub(crate) const FT_KEY_LEN: usize = FAMILY_ID_LEN + ACCESS_KEY_LEN;
pub(crate) const DL_KEY_LEN: usize = 8 + 1 + ID_SLOT;
pub(crate) const IX_KEY_LEN: usize = INDEX_HASH_LEN + 1 + ID_SLOT;
pub(crate) const TX_KEY_LEN: usize = 4 + INDEX_HASH_LEN + 8 + ID_PREFIX;
/// Bytes of a token id kept in a token-index entry: with the full 32, an entry was 60 bytes and
/// the two indexes took 186 of the 470 bytes a live token cost in a compacted file.
pub(crate) const ID_PREFIX: usize = 8;
pub(crate) const RECENT_LEN: usize = 2 * INDEX_HASH_LEN;
const ID_SLOT: usize = ACCESS_KEY_LEN;

/// log2 of the width of a token-index deadline bucket in ms: 2^12 ms ≈ 4.1 s. An entry of
/// `subject_tokens.v3`/`client_tokens.v3` outlives its swept token by at most one bucket;
/// revoking a subject probes one range per live bucket (at most 880 for tokens living an
/// hour). Why so narrow: a merge of [`MERGE_AT`] recent entries rewrites every leaf of the
/// buckets it lands in, so the fewer entries a bucket holds, the fewer leaves a merge rewrites
/// (format 2 used 2^16 ms, when each issue inserted into the indexes directly).
pub const BUCKET_SHIFT: u32 = 12;

/// The default of `WriterOptions::merge_at`: how many entries [`RECENT_TOKENS`] collects before
/// the writer merges them, in key order, into the two token indexes (at the end of the batch
/// that reached it). Larger merges
/// amortise the rewritten index leaves over more tokens; smaller ones bound the scan every
/// revocation by subject or client makes of the recent entries, and the merging commit's size.
pub const MERGE_AT: u64 = 16_384;

/// What an index entry points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A family (its refresh token and, through `family_tokens`, its access tokens).
    Family(FamilyId),
    /// An access token.
    Token(AccessKey),
    /// The end of a family's grace window for one generation: its kept successor secret is
    /// erased then, if the family is still at that generation.
    Grace(FamilyId, u64),
    /// A proof in the replay cache (`proofs`): deleted once due.
    Proof(ProofId),
}

impl Entry {
    fn kind(&self) -> u8 {
        match self {
            Self::Family(_) => 1,
            Self::Token(_) => 2,
            Self::Grace(..) => 3,
            Self::Proof(_) => 4,
        }
    }

    fn id_slot(&self) -> [u8; ID_SLOT] {
        let mut out = [0u8; ID_SLOT];
        match self {
            Self::Family(f) => {
                if let Some(head) = out.get_mut(..FAMILY_ID_LEN) {
                    head.copy_from_slice(f.as_bytes());
                }
            }
            Self::Token(t) => out = t.to_bytes(),
            Self::Grace(f, generation) => out = concat(&[f.as_bytes(), &generation.to_be_bytes()]),
            Self::Proof(p) => out = concat(&[p.as_bytes()]),
        }
        out
    }

    fn parse(kind: u8, id: &[u8]) -> Option<Self> {
        match kind {
            1 => {
                let (f, pad) = id.split_at_checked(FAMILY_ID_LEN)?;
                pad.iter().all(|b| *b == 0).then_some(())?;
                FamilyId::from_slice(f).map(Self::Family)
            }
            2 => AccessKey::from_slice(id).map(Self::Token),
            3 => {
                let (f, rest) = id.split_at_checked(FAMILY_ID_LEN)?;
                let (g, pad) = rest.split_at_checked(8)?;
                pad.iter().all(|b| *b == 0).then_some(())?;
                Some(Self::Grace(
                    FamilyId::from_slice(f)?,
                    u64::from_be_bytes(g.try_into().ok()?),
                ))
            }
            4 => {
                let (p, pad) = id.split_at_checked(PROOF_ID_LEN)?;
                pad.iter().all(|b| *b == 0).then_some(())?;
                ProofId::from_slice(p).map(Self::Proof)
            }
            _ => None,
        }
    }
}

fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut rest = &mut out[..];
    for p in parts {
        let Some((head, tail)) = rest.split_at_mut_checked(p.len()) else {
            break;
        };
        head.copy_from_slice(p);
        rest = tail;
    }
    out
}

pub(crate) fn ft_key(f: &FamilyId, t: &AccessKey) -> [u8; FT_KEY_LEN] {
    concat(&[f.as_bytes(), &t.to_bytes()])
}

pub(crate) fn ft_range(f: &FamilyId) -> ([u8; FT_KEY_LEN], [u8; FT_KEY_LEN]) {
    (
        concat(&[f.as_bytes(), &[0u8; ACCESS_KEY_LEN]]),
        concat(&[f.as_bytes(), &[0xffu8; ACCESS_KEY_LEN]]),
    )
}

pub(crate) fn ft_token(key: &[u8; FT_KEY_LEN]) -> Option<AccessKey> {
    AccessKey::from_slice(key.get(FAMILY_ID_LEN..)?)
}

/// The first access key with a deadline after `now`: every token key below it is due.
pub(crate) fn tokens_after(now: u64) -> [u8; ACCESS_KEY_LEN] {
    concat(&[&now.saturating_add(1).to_be_bytes()])
}

/// The deadline bucket of `deadline`, saturating at `u32::MAX`.
pub(crate) fn bucket(deadline: u64) -> u32 {
    u32::try_from(deadline >> BUCKET_SHIFT).unwrap_or(u32::MAX)
}

pub(crate) fn tx_key(h: &IndexHash, t: &AccessKey) -> [u8; TX_KEY_LEN] {
    let key = t.to_bytes();
    concat(&[
        &bucket(t.deadline).to_be_bytes(),
        h.as_bytes(),
        key.get(..8 + ID_PREFIX).unwrap_or_default(),
    ])
}

/// The first key of bucket `b`.
pub(crate) fn tx_bucket_start(b: u32) -> [u8; TX_KEY_LEN] {
    concat(&[&b.to_be_bytes()])
}

/// The keys of hash `h` in bucket `b`, inclusive.
pub(crate) fn tx_range(b: u32, h: &IndexHash) -> ([u8; TX_KEY_LEN], [u8; TX_KEY_LEN]) {
    (
        concat(&[&b.to_be_bytes(), h.as_bytes()]),
        concat(&[&b.to_be_bytes(), h.as_bytes(), &[0xffu8; 8 + ID_PREFIX]]),
    )
}

/// The access token(s) a token-index entry names: a deadline and a token id prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TokenRef {
    pub(crate) deadline: u64,
    prefix: [u8; ID_PREFIX],
}

impl TokenRef {
    /// The `tokens` keys it may name, inclusive.
    pub(crate) fn range(&self) -> ([u8; ACCESS_KEY_LEN], [u8; ACCESS_KEY_LEN]) {
        let d = self.deadline.to_be_bytes();
        (
            concat(&[&d, &self.prefix]),
            concat(&[&d, &self.prefix, &[0xffu8; ACCESS_KEY_LEN - 8 - ID_PREFIX]]),
        )
    }

    /// Whether `key` is one of the access keys it may name.
    #[cfg(test)]
    pub(crate) fn names(&self, key: &AccessKey) -> bool {
        let (lo, hi) = self.range();
        let k = key.to_bytes();
        lo <= k && k <= hi
    }

    /// A stand-in key for an entry whose token is gone (swept): its deadline and prefix, then
    /// zeros.
    pub(crate) fn placeholder(&self) -> AccessKey {
        AccessKey::from_bytes(&self.range().0)
    }
}

/// The first access key with a deadline at or after `deadline`.
pub(crate) fn access_keys_from(deadline: u64) -> [u8; ACCESS_KEY_LEN] {
    concat(&[&deadline.to_be_bytes()])
}

/// The value of a [`RECENT_TOKENS`] entry.
pub(crate) fn recent_value(subject: &IndexHash, client: &IndexHash) -> [u8; RECENT_LEN] {
    concat(&[subject.as_bytes(), client.as_bytes()])
}

/// Subject and client hash of a [`RECENT_TOKENS`] value.
pub(crate) fn recent_parse(v: &[u8; RECENT_LEN]) -> Option<(IndexHash, IndexHash)> {
    let (s, c) = v.split_at_checked(INDEX_HASH_LEN)?;
    Some((IndexHash::from_slice(s)?, IndexHash::from_slice(c)?))
}

/// Bucket, hash and token reference of a token-index key.
pub(crate) fn tx_parse(key: &[u8; TX_KEY_LEN]) -> Option<(u32, IndexHash, TokenRef)> {
    let (b, rest) = key.split_at_checked(4)?;
    let (h, rest) = rest.split_at_checked(INDEX_HASH_LEN)?;
    let (d, prefix) = rest.split_at_checked(8)?;
    let deadline = u64::from_be_bytes(d.try_into().ok()?);
    let b = u32::from_be_bytes(b.try_into().ok()?);
    let t = TokenRef {
        deadline,
        prefix: prefix.try_into().ok()?,
    };
    (b == bucket(deadline)).then_some((b, IndexHash::from_slice(h)?, t))
}

/// Format 2's token indexes, read only to convert them when a format 2 file is opened.
pub(crate) mod v2 {
    use super::{ACCESS_KEY_LEN, AccessKey, INDEX_HASH_LEN, IndexHash, TableDefinition};

    /// Bytes of a format 2 token-index key.
    pub(crate) const TX_KEY_LEN: usize = 4 + INDEX_HASH_LEN + ACCESS_KEY_LEN;

    /// bucket (deadline >> 16, u32 BE) ‖ subject hash ‖ access key → ().
    pub(crate) const SUBJECT_TOKENS: TableDefinition<'_, &[u8; TX_KEY_LEN], ()> =
        TableDefinition::new("subject_tokens");
    /// The same by client hash.
    pub(crate) const CLIENT_TOKENS: TableDefinition<'_, &[u8; TX_KEY_LEN], ()> =
        TableDefinition::new("client_tokens");

    /// Hash and access key of a format 2 entry; `None` if its bucket disagrees with its
    /// deadline (not an entry format 2 wrote).
    pub(crate) fn parse(key: &[u8; TX_KEY_LEN]) -> Option<(IndexHash, AccessKey)> {
        let (b, rest) = key.split_at_checked(4)?;
        let (h, t) = rest.split_at_checked(INDEX_HASH_LEN)?;
        let t = AccessKey::from_slice(t)?;
        let b = u32::from_be_bytes(b.try_into().ok()?);
        (u64::from(b) == t.deadline >> 16).then_some((IndexHash::from_slice(h)?, t))
    }
}

pub(crate) fn dl_key(deadline: u64, e: &Entry) -> [u8; DL_KEY_LEN] {
    concat(&[&deadline.to_be_bytes(), &[e.kind()], &e.id_slot()])
}

/// Everything with deadline ≤ `now`, as an inclusive upper bound.
pub(crate) fn dl_upto(now: u64) -> [u8; DL_KEY_LEN] {
    concat(&[&now.to_be_bytes(), &[0xff], &[0xffu8; ID_SLOT]])
}

pub(crate) fn dl_parse(key: &[u8; DL_KEY_LEN]) -> Option<(u64, Entry)> {
    let (d, rest) = key.split_at_checked(8)?;
    let (k, id) = rest.split_first()?;
    Some((
        u64::from_be_bytes(d.try_into().ok()?),
        Entry::parse(*k, id)?,
    ))
}

pub(crate) fn ix_key(h: &IndexHash, e: &Entry) -> [u8; IX_KEY_LEN] {
    concat(&[h.as_bytes(), &[e.kind()], &e.id_slot()])
}

pub(crate) fn ix_range(h: &IndexHash) -> ([u8; IX_KEY_LEN], [u8; IX_KEY_LEN]) {
    (
        concat(&[h.as_bytes(), &[0u8; 1 + ID_SLOT]]),
        concat(&[h.as_bytes(), &[0xffu8; 1 + ID_SLOT]]),
    )
}

pub(crate) fn ix_parse(key: &[u8; IX_KEY_LEN]) -> Option<Entry> {
    let rest = key.get(INDEX_HASH_LEN..)?;
    let (k, id) = rest.split_first()?;
    Entry::parse(*k, id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokendb_core::TokenId;

    fn akey(deadline: u64, b: u8) -> AccessKey {
        AccessKey {
            deadline,
            id: TokenId::from_bytes([b; 32]),
        }
    }

    #[test]
    fn token_keys_order_by_deadline_and_bucket() {
        // The tokens table: everything due at `now` sorts below `tokens_after(now)`.
        assert!(akey(6, 0xff).to_bytes() < tokens_after(6));
        assert!(akey(7, 0).to_bytes() >= tokens_after(6));
        assert!(akey(u64::MAX - 1, 0xff).to_bytes() < tokens_after(u64::MAX - 1));
        // Token-index keys: by bucket first, then hash, then access key.
        let h = IndexHash::from_bytes([3; 16]);
        let early = akey(5, 9);
        let late = akey(5 + (1 << BUCKET_SHIFT), 1);
        let (b, hash, r) = tx_parse(&tx_key(&h, &early)).unwrap();
        assert_eq!((b, hash), (0, h));
        assert!(r.names(&early) && !r.names(&late));
        assert!(r.range().0 <= early.to_bytes() && early.to_bytes() <= r.range().1);
        // Another token of the same millisecond is not named unless its id shares the prefix.
        assert!(!r.names(&akey(5, 8)));
        let (b, _, r) = tx_parse(&tx_key(&h, &late)).unwrap();
        assert_eq!(b, 1);
        assert!(r.names(&late));
        assert!(tx_key(&h, &early) < tx_bucket_start(1));
        assert!(tx_key(&h, &late) >= tx_bucket_start(1));
        let (lo, hi) = tx_range(1, &h);
        assert!(lo <= tx_key(&h, &late) && tx_key(&h, &late) <= hi);
        assert!(tx_key(&h, &early) < lo);
        // A key whose bucket disagrees with its deadline is not ours.
        let mut bad = tx_key(&h, &early);
        bad[3] = 9;
        assert_eq!(tx_parse(&bad), None);
        assert_eq!(bucket(u64::MAX), u32::MAX);
    }

    #[test]
    fn keys_round_trip_and_order_by_deadline() {
        let f = Entry::Family(FamilyId::from_bytes([7; 16]));
        let t = Entry::Token(akey(77, 9));
        assert_eq!(dl_parse(&dl_key(5, &f)), Some((5, f)));
        assert_eq!(dl_parse(&dl_key(u64::MAX, &t)), Some((u64::MAX, t)));
        let g = Entry::Grace(FamilyId::from_bytes([7; 16]), 42);
        assert_eq!(dl_parse(&dl_key(9, &g)), Some((9, g)));
        let p = Entry::Proof(ProofId::from_bytes([5; 32]));
        assert_eq!(dl_parse(&dl_key(9, &p)), Some((9, p)));
        let mut bad = dl_key(9, &p);
        bad[DL_KEY_LEN - 1] = 1;
        assert_eq!(dl_parse(&bad), None, "a proof entry's pad is zeros");
        assert!(dl_key(5, &t) < dl_key(6, &f));
        assert!(dl_key(6, &t) <= dl_upto(6));
        assert!(dl_key(7, &f) > dl_upto(6));
        let h = IndexHash::from_bytes([3; 16]);
        assert_eq!(ix_parse(&ix_key(&h, &t)), Some(t));
        let (lo, hi) = ix_range(&h);
        assert!(lo <= ix_key(&h, &f) && ix_key(&h, &t) <= hi);
        let fid = FamilyId::from_bytes([1; 16]);
        let tid = akey(5, 2);
        assert_eq!(ft_token(&ft_key(&fid, &tid)), Some(tid));
        assert!(ft_range(&fid).0 <= ft_key(&fid, &tid) && ft_key(&fid, &tid) <= ft_range(&fid).1);
        // A family entry with a non-zero pad is not ours.
        let mut bad = dl_key(1, &f);
        bad[40] = 1;
        assert_eq!(dl_parse(&bad), None);
        let mut bad = dl_key(1, &f);
        bad[48] = 1;
        assert_eq!(dl_parse(&bad), None);
    }
}
