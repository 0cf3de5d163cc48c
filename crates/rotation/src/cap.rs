//! The optional cap on live families per (subject, client).

use tokendb_core::FamilyId;

/// What to do when a new family would exceed the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyCap {
    /// Revoke the oldest live families to make room.
    EvictOldest(u32),
    /// Refuse the new issue.
    Refuse(u32),
}

/// The answer for one issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapAction {
    /// Room left: issue.
    Allow,
    /// Issue after revoking these families (oldest first).
    Evict(Vec<FamilyId>),
    /// Refuse: the cap is reached.
    Refuse {
        /// The cap.
        limit: u32,
    },
}

/// Decides an issue against the cap. `live` lists the (subject, client)'s live families with
/// their creation times, in any order. A cap of 0 refuses every issue (`Refuse`) or keeps none
/// (`EvictOldest` evicts all and then allows the new one: the newest login wins).
#[must_use]
pub fn cap_decision(cap: Option<FamilyCap>, live: &[(FamilyId, u64)]) -> CapAction {
    let (limit, evict) = match cap {
        None => return CapAction::Allow,
        Some(FamilyCap::EvictOldest(n)) => (n, true),
        Some(FamilyCap::Refuse(n)) => (n, false),
    };
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    if live.len() < limit_usize || (limit == 0 && evict && live.is_empty()) {
        return CapAction::Allow;
    }
    if !evict {
        return CapAction::Refuse { limit };
    }
    let mut sorted: Vec<(FamilyId, u64)> = live.to_vec();
    sorted.sort_by_key(|(id, created)| (*created, *id));
    let excess = live.len() + 1 - limit_usize.max(1).min(live.len() + 1);
    let excess = if limit == 0 { live.len() } else { excess };
    CapAction::Evict(sorted.into_iter().take(excess).map(|(id, _)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(n: u8) -> FamilyId {
        FamilyId::from_bytes([n; 16])
    }

    #[test]
    fn cap_rules() {
        let live = [(fam(1), 30), (fam(2), 10), (fam(3), 20)];
        assert_eq!(cap_decision(None, &live), CapAction::Allow);
        assert_eq!(
            cap_decision(Some(FamilyCap::Refuse(4)), &live),
            CapAction::Allow
        );
        assert_eq!(
            cap_decision(Some(FamilyCap::Refuse(3)), &live),
            CapAction::Refuse { limit: 3 }
        );
        assert_eq!(
            cap_decision(Some(FamilyCap::EvictOldest(3)), &live),
            CapAction::Evict(vec![fam(2)])
        );
        assert_eq!(
            cap_decision(Some(FamilyCap::EvictOldest(2)), &live),
            CapAction::Evict(vec![fam(2), fam(3)])
        );
        assert_eq!(
            cap_decision(Some(FamilyCap::EvictOldest(1)), &live),
            CapAction::Evict(vec![fam(2), fam(3), fam(1)])
        );
        assert_eq!(
            cap_decision(Some(FamilyCap::EvictOldest(0)), &live),
            CapAction::Evict(vec![fam(2), fam(3), fam(1)])
        );
        assert_eq!(
            cap_decision(Some(FamilyCap::EvictOldest(0)), &[]),
            CapAction::Allow
        );
        assert_eq!(
            cap_decision(Some(FamilyCap::Refuse(0)), &[]),
            CapAction::Refuse { limit: 0 }
        );
    }
}
