//! Table definitions and the fixed-width keys of the indexes.

use redb::TableDefinition;
use tokendb_core::ids::{FAMILY_ID_LEN, INDEX_HASH_LEN, TOKEN_ID_LEN};
use tokendb_core::{FamilyId, IndexHash, TokenId};

/// family id → encoded [`tokendb_core::FamilyRecord`].
pub(crate) const FAMILIES: TableDefinition<'_, &[u8; FAMILY_ID_LEN], &[u8]> =
    TableDefinition::new("families");
/// token id → encoded [`tokendb_core::AccessRecord`].
pub(crate) const TOKENS: TableDefinition<'_, &[u8; TOKEN_ID_LEN], &[u8]> =
    TableDefinition::new("tokens");
/// family id ‖ token id → (): the access tokens of a family.
pub(crate) const FAMILY_TOKENS: TableDefinition<'_, &[u8; FT_KEY_LEN], ()> =
    TableDefinition::new("family_tokens");
/// deadline (u64 BE) ‖ kind ‖ id (32, family ids zero-padded) → (): what expires when.
pub(crate) const DEADLINES: TableDefinition<'_, &[u8; DL_KEY_LEN], ()> =
    TableDefinition::new("deadlines");
/// subject hash ‖ kind ‖ id → ().
pub(crate) const BY_SUBJECT: TableDefinition<'_, &[u8; IX_KEY_LEN], ()> =
    TableDefinition::new("by_subject");
/// client hash ‖ kind ‖ id → ().
pub(crate) const BY_CLIENT: TableDefinition<'_, &[u8; IX_KEY_LEN], ()> =
    TableDefinition::new("by_client");
/// name → value: format version, wrapped data keys, current key id.
pub(crate) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

pub(crate) const FT_KEY_LEN: usize = FAMILY_ID_LEN + TOKEN_ID_LEN;
pub(crate) const DL_KEY_LEN: usize = 8 + 1 + 32;
pub(crate) const IX_KEY_LEN: usize = INDEX_HASH_LEN + 1 + 32;

/// What an index entry points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A family (its refresh token and, through `family_tokens`, its access tokens).
    Family(FamilyId),
    /// An access token.
    Token(TokenId),
    /// The end of a family's grace window for one generation: its kept successor secret is
    /// erased then, if the family is still at that generation.
    Grace(FamilyId, u64),
}

impl Entry {
    fn kind(&self) -> u8 {
        match self {
            Self::Family(_) => 1,
            Self::Token(_) => 2,
            Self::Grace(..) => 3,
        }
    }

    fn id32(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        match self {
            Self::Family(f) => {
                if let Some(head) = out.get_mut(..FAMILY_ID_LEN) {
                    head.copy_from_slice(f.as_bytes());
                }
            }
            Self::Token(t) => out.copy_from_slice(t.as_bytes()),
            Self::Grace(f, generation) => out = concat(&[f.as_bytes(), &generation.to_be_bytes()]),
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
            2 => TokenId::from_slice(id).map(Self::Token),
            3 => {
                let (f, rest) = id.split_at_checked(FAMILY_ID_LEN)?;
                let (g, pad) = rest.split_at_checked(8)?;
                pad.iter().all(|b| *b == 0).then_some(())?;
                Some(Self::Grace(
                    FamilyId::from_slice(f)?,
                    u64::from_be_bytes(g.try_into().ok()?),
                ))
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

pub(crate) fn ft_key(f: &FamilyId, t: &TokenId) -> [u8; FT_KEY_LEN] {
    concat(&[f.as_bytes(), t.as_bytes()])
}

pub(crate) fn ft_range(f: &FamilyId) -> ([u8; FT_KEY_LEN], [u8; FT_KEY_LEN]) {
    (
        concat(&[f.as_bytes(), &[0u8; 32]]),
        concat(&[f.as_bytes(), &[0xffu8; 32]]),
    )
}

pub(crate) fn ft_token(key: &[u8; FT_KEY_LEN]) -> Option<TokenId> {
    TokenId::from_slice(key.get(FAMILY_ID_LEN..)?)
}

pub(crate) fn dl_key(deadline: u64, e: &Entry) -> [u8; DL_KEY_LEN] {
    concat(&[&deadline.to_be_bytes(), &[e.kind()], &e.id32()])
}

/// Everything with deadline ≤ `now`, as an inclusive upper bound.
pub(crate) fn dl_upto(now: u64) -> [u8; DL_KEY_LEN] {
    concat(&[&now.to_be_bytes(), &[0xff], &[0xffu8; 32]])
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
    concat(&[h.as_bytes(), &[e.kind()], &e.id32()])
}

pub(crate) fn ix_range(h: &IndexHash) -> ([u8; IX_KEY_LEN], [u8; IX_KEY_LEN]) {
    (
        concat(&[h.as_bytes(), &[0u8; 33]]),
        concat(&[h.as_bytes(), &[0xffu8; 33]]),
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

    #[test]
    fn keys_round_trip_and_order_by_deadline() {
        let f = Entry::Family(FamilyId::from_bytes([7; 16]));
        let t = Entry::Token(TokenId::from_bytes([9; 32]));
        assert_eq!(dl_parse(&dl_key(5, &f)), Some((5, f)));
        assert_eq!(dl_parse(&dl_key(u64::MAX, &t)), Some((u64::MAX, t)));
        let g = Entry::Grace(FamilyId::from_bytes([7; 16]), 42);
        assert_eq!(dl_parse(&dl_key(9, &g)), Some((9, g)));
        assert!(dl_key(5, &t) < dl_key(6, &f));
        assert!(dl_key(6, &t) <= dl_upto(6));
        assert!(dl_key(7, &f) > dl_upto(6));
        let h = IndexHash::from_bytes([3; 16]);
        assert_eq!(ix_parse(&ix_key(&h, &t)), Some(t));
        let (lo, hi) = ix_range(&h);
        assert!(lo <= ix_key(&h, &f) && ix_key(&h, &t) <= hi);
        let fid = FamilyId::from_bytes([1; 16]);
        let tid = TokenId::from_bytes([2; 32]);
        assert_eq!(ft_token(&ft_key(&fid, &tid)), Some(tid));
        // A family entry with a non-zero pad is not ours.
        let mut bad = dl_key(1, &f);
        bad[40] = 1;
        assert_eq!(dl_parse(&bad), None);
    }
}
