use super::decide_presented as decide;
use super::*;
use crate::policy::{DAY_MS, HOUR_MS};
use proptest::prelude::*;
use tokendb_core::{IndexHash, KeyId, TokenId};

const T0: u64 = 1_800_000_000_000;

fn family(generation: u64) -> FamilyRecord {
    let (absolute, idle) = Policy::default().deadlines_at_issue(T0).unwrap();
    FamilyRecord {
        key_id: KeyId(1),
        state: RecordState::Active,
        created_at: T0,
        absolute_deadline: absolute,
        idle_deadline: idle,
        generation,
        rotated_at: T0,
        current: TokenId::from_bytes([0; 32]),
        subject: IndexHash::from_bytes([0; 16]),
        client: IndexHash::from_bytes([0; 16]),
        grace: Vec::new(),
        body: Vec::new(),
        confirmation: None,
    }
}

fn current(generation: u64) -> Presented {
    Presented {
        generation,
        tag_valid: true,
        matches_current: true,
    }
}

fn old(generation: u64) -> Presented {
    Presented {
        generation,
        tag_valid: true,
        matches_current: false,
    }
}

fn grant() -> Scope {
    Scope::parse("openid offline_access profile").unwrap()
}

fn req(granted: &Scope) -> Request<'_> {
    Request {
        client_matches: true,
        binding: Binding::Unbound,
        requested_scope: None,
        granted_scope: granted,
    }
}

#[test]
fn rotation_keeps_the_absolute_deadline_and_caps_idle() {
    let g = grant();
    let f = family(1);
    // Rotated on day 89 of a 90-day family: idle would reach day 103, capped at day 90.
    let now = T0 + 89 * DAY_MS;
    let mut f89 = f.clone();
    f89.idle_deadline = now + DAY_MS;
    match decide(&f89, &current(1), &req(&g), &Policy::default(), now) {
        Decision::Rotate {
            generation,
            absolute_deadline,
            idle_deadline,
            keep_for_grace,
        } => {
            assert_eq!(generation, 2);
            assert_eq!(absolute_deadline, T0 + 90 * DAY_MS);
            assert_eq!(idle_deadline, T0 + 90 * DAY_MS);
            assert!(!keep_for_grace);
        }
        d => panic!("{d:?}"),
    }
    // Early rotation: idle is now + 14 days.
    match decide(&f, &current(1), &req(&g), &Policy::default(), T0 + HOUR_MS) {
        Decision::Rotate { idle_deadline, .. } => {
            assert_eq!(idle_deadline, T0 + HOUR_MS + 14 * DAY_MS)
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn deadlines_are_exclusive_and_idle_holds_before_absolute() {
    let g = grant();
    let f = family(1);
    let p = Policy::default();
    assert_eq!(
        decide(&f, &current(1), &req(&g), &p, f.idle_deadline),
        Decision::Refuse(Refusal::ExpiredIdle)
    );
    assert!(matches!(
        decide(&f, &current(1), &req(&g), &p, f.idle_deadline - 1),
        Decision::Rotate { .. }
    ));
    let mut f2 = f.clone();
    f2.idle_deadline = f2.absolute_deadline;
    assert_eq!(
        decide(&f2, &current(1), &req(&g), &p, f2.absolute_deadline),
        Decision::Refuse(Refusal::ExpiredAbsolute)
    );
    assert_eq!(family_status(&f, f.idle_deadline), Status::ExpiredIdle);
}

#[test]
fn unknown_tokens_revoke_nothing() {
    let g = grant();
    let f = family(5);
    let p = Policy::default();
    let bad_tag = Presented {
        generation: 2,
        tag_valid: false,
        matches_current: false,
    };
    assert_eq!(
        decide(&f, &bad_tag, &req(&g), &p, T0),
        Decision::Refuse(Refusal::Unknown)
    );
    assert_eq!(
        decide(&f, &old(6), &req(&g), &p, T0),
        Decision::Refuse(Refusal::Unknown)
    );
    assert_eq!(
        decide(&f, &old(0), &req(&g), &p, T0),
        Decision::Refuse(Refusal::Unknown)
    );
    assert_eq!(
        decide(&f, &old(5), &req(&g), &p, T0),
        Decision::Refuse(Refusal::Unknown)
    );
}

#[test]
fn reuse_of_any_earlier_generation_is_detected() {
    let g = grant();
    let mut f = family(10_000);
    f.rotated_at = T0 + 500;
    for generation in [1, 2, 9_998, 9_999] {
        assert_eq!(
            decide(
                &f,
                &old(generation),
                &req(&g),
                &Policy::default(),
                T0 + 1_500
            ),
            Decision::ReuseDetected {
                presented: generation,
                newest: 10_000,
                ms_since_rotation: 1_000
            }
        );
    }
}

#[test]
fn client_mismatch_is_refused_not_theft() {
    let g = grant();
    let f = family(3);
    let r = Request {
        client_matches: false,
        ..req(&g)
    };
    for p in [current(3), old(2), old(1)] {
        assert_eq!(
            decide(&f, &p, &r, &Policy::default(), T0),
            Decision::Refuse(Refusal::ClientMismatch)
        );
    }
}

#[test]
fn scope_may_narrow_but_never_widen() {
    let g = grant();
    let f = family(1);
    let narrow = Scope::parse("openid").unwrap();
    let wide = Scope::parse("openid admin").unwrap();
    let r = Request {
        requested_scope: Some(&narrow),
        ..req(&g)
    };
    assert!(matches!(
        decide(&f, &current(1), &r, &Policy::default(), T0),
        Decision::Rotate { .. }
    ));
    let r = Request {
        requested_scope: Some(&wide),
        ..req(&g)
    };
    assert_eq!(
        decide(&f, &current(1), &r, &Policy::default(), T0),
        Decision::Refuse(Refusal::ScopeWidened)
    );
}

#[test]
fn grace_replays_only_the_immediate_predecessor_inside_the_window() {
    let g = grant();
    let p = Policy {
        grace_ms: 10_000,
        ..Policy::default()
    };
    let mut f = family(2);
    f.rotated_at = T0 + 1_000;
    f.grace = vec![1; 56];
    assert_eq!(
        decide(&f, &old(1), &req(&g), &p, T0 + 10_999),
        Decision::GraceReplay { generation: 2 }
    );
    // Window over (exclusive end).
    assert!(matches!(
        decide(&f, &old(1), &req(&g), &p, T0 + 11_000),
        Decision::ReuseDetected { .. }
    ));
    // Grace disabled.
    assert!(matches!(
        decide(&f, &old(1), &req(&g), &Policy::default(), T0 + 2_000),
        Decision::ReuseDetected { .. }
    ));
    // Slot already erased.
    let mut erased = f.clone();
    erased.grace.clear();
    assert!(matches!(
        decide(&erased, &old(1), &req(&g), &p, T0 + 2_000),
        Decision::ReuseDetected { .. }
    ));
    // Once the successor rotated, the old one is two generations back: reuse.
    let mut f3 = f.clone();
    f3.generation = 3;
    assert!(matches!(
        decide(&f3, &old(1), &req(&g), &p, T0 + 2_000),
        Decision::ReuseDetected { .. }
    ));
    // Rotations keep the slot when grace is on.
    assert!(matches!(
        decide(&f, &current(2), &req(&g), &p, T0 + 2_000),
        Decision::Rotate {
            keep_for_grace: true,
            generation: 3,
            ..
        }
    ));
}

/// The binding of a presentation to a family's confirmation, as `Binding::of` computes it.
#[test]
fn binding_compares_kind_and_thumbprint() {
    use tokendb_core::Confirmation;
    let key = Confirmation::Jkt([1; 32]);
    let other = Confirmation::Jkt([2; 32]);
    let cert = Confirmation::X5tS256([1; 32]);
    assert_eq!(Binding::of(None, None), Binding::Unbound);
    assert_eq!(Binding::of(None, Some(&key)), Binding::Unbound);
    assert_eq!(Binding::of(Some(&key), Some(&key)), Binding::Proven);
    assert_eq!(Binding::of(Some(&key), None), Binding::NotProven);
    assert_eq!(Binding::of(Some(&key), Some(&other)), Binding::NotProven);
    assert_eq!(
        Binding::of(Some(&key), Some(&cert)),
        Binding::NotProven,
        "a certificate with the same bytes is not the key"
    );
}

/// Known answers for a sender-constrained family: the key's holder rotates as before; the
/// token without the key is a mismatch that revokes (default) or is refused (policy off), for
/// the current token and for a grace retry alike; an older generation is reuse either way.
#[test]
fn a_bound_family_rotates_only_for_the_key_holder() {
    let g = grant();
    let grace = Policy {
        grace_ms: 10_000,
        ..Policy::default()
    };
    let keep = Policy {
        revoke_on_confirmation_mismatch: false,
        ..grace
    };
    let mut f = family(3);
    f.rotated_at = T0 + 1_000;
    f.grace = vec![1; 56];
    let with = |binding| Request { binding, ..req(&g) };
    let now = T0 + 2_000;
    // The key's holder: rotation, and the grace retry.
    assert!(matches!(
        decide(&f, &current(3), &with(Binding::Proven), &grace, now),
        Decision::Rotate { generation: 4, .. }
    ));
    assert_eq!(
        decide(&f, &old(2), &with(Binding::Proven), &grace, now),
        Decision::GraceReplay { generation: 3 }
    );
    // Without the key: revoked by default, refused when the policy keeps the family.
    for p in [current(3), old(2)] {
        assert_eq!(
            decide(&f, &p, &with(Binding::NotProven), &grace, now),
            Decision::RevokeForMismatch,
            "{p:?}"
        );
        assert_eq!(
            decide(&f, &p, &with(Binding::NotProven), &keep, now),
            Decision::Refuse(Refusal::ConfirmationMismatch),
            "{p:?}"
        );
    }
    // An older generation is reuse, key or no key, policy or no policy.
    for b in [Binding::Proven, Binding::NotProven] {
        for p in [&grace, &keep] {
            assert!(matches!(
                decide(&f, &old(1), &with(b), p, now),
                Decision::ReuseDetected {
                    presented: 1,
                    newest: 3,
                    ..
                }
            ));
        }
    }
    // The checks before it still come first: another client, a revoked or expired family.
    let other = Request {
        client_matches: false,
        ..with(Binding::NotProven)
    };
    assert_eq!(
        decide(&f, &current(3), &other, &grace, now),
        Decision::Refuse(Refusal::ClientMismatch)
    );
    assert_eq!(
        decide(
            &f,
            &current(3),
            &with(Binding::NotProven),
            &grace,
            f.idle_deadline
        ),
        Decision::Refuse(Refusal::ExpiredIdle)
    );
    // A wrong secret for the newest generation is unknown, not a mismatch: nothing revoked.
    assert_eq!(
        decide(&f, &old(3), &with(Binding::NotProven), &grace, now),
        Decision::Refuse(Refusal::Unknown)
    );
    // Non-rotating families slide only for the key's holder too.
    let reuse = Policy {
        mode: crate::RotationMode::ReUse {
            touch_granularity_ms: 1,
        },
        ..Policy::default()
    };
    assert!(matches!(
        decide(&f, &current(3), &with(Binding::Proven), &reuse, now),
        Decision::Slide { .. }
    ));
    assert_eq!(
        decide(&f, &current(3), &with(Binding::NotProven), &reuse, now),
        Decision::RevokeForMismatch
    );
}

#[test]
fn revoked_and_expired_families_refuse_even_old_generations() {
    let g = grant();
    let mut f = family(4);
    f.state = RecordState::Revoked {
        reason: RevokeReason::ReuseDetected,
        at: T0,
    };
    for p in [current(4), old(2)] {
        assert_eq!(
            decide(&f, &p, &req(&g), &Policy::default(), T0),
            Decision::Refuse(Refusal::Revoked(RevokeReason::ReuseDetected))
        );
    }
}

#[test]
fn reuse_mode_slides_at_a_granularity() {
    let g = grant();
    let p = Policy {
        mode: RotationMode::ReUse {
            touch_granularity_ms: 60_000,
        },
        ..Policy::default()
    };
    let f = family(1);
    assert_eq!(
        decide(&f, &current(1), &req(&g), &p, T0 + 59_999),
        Decision::Slide {
            idle_deadline: None
        }
    );
    assert_eq!(
        decide(&f, &current(1), &req(&g), &p, T0 + 60_000),
        Decision::Slide {
            idle_deadline: Some(T0 + 60_000 + 14 * DAY_MS)
        }
    );
}

#[test]
fn policy_limits() {
    assert!(
        Policy {
            absolute_ms: 0,
            ..Policy::default()
        }
        .deadlines_at_issue(T0)
        .is_err()
    );
    assert!(
        Policy {
            idle_ms: 0,
            ..Policy::default()
        }
        .deadlines_at_issue(T0)
        .is_err()
    );
    assert!(
        Policy {
            grace_ms: crate::MAX_GRACE_MS + 1,
            ..Policy::default()
        }
        .validate()
        .is_err()
    );
    let forever = Policy {
        absolute_ms: u64::MAX,
        idle_ms: u64::MAX,
        ..Policy::default()
    };
    assert_eq!(
        forever.deadlines_at_issue(T0).unwrap(),
        (u64::MAX, u64::MAX)
    );
}

proptest! {
    /// Whatever happens, a rotation never moves the absolute deadline and never sets an idle
    /// deadline past it; nothing but a genuine earlier generation is ever reuse.
    #[test]
    fn invariants(
        generation in 1u64..50,
        presented_gen in 0u64..55,
        tag_valid: bool,
        matches_current: bool,
        client_matches: bool,
        binding in 0u8..3,
        grace_ms in 0u64..60_000,
        dt in 0u64..(100 * DAY_MS),
        idle_left in 0u64..(20 * DAY_MS),
    ) {
        let g = grant();
        let mut f = family(generation);
        f.idle_deadline = (T0 + idle_left).min(f.absolute_deadline);
        f.grace = if grace_ms > 0 { vec![1] } else { vec![] };
        let p = Policy { grace_ms, ..Policy::default() };
        let pres = Presented { generation: presented_gen, tag_valid, matches_current };
        let binding = match binding {
            0 => Binding::Unbound,
            1 => Binding::Proven,
            _ => Binding::NotProven,
        };
        let r = Request { client_matches, binding, ..req(&g) };
        let now = T0 + dt;
        match decide(&f, &pres, &r, &p, now) {
            Decision::Rotate { generation: g2, absolute_deadline, idle_deadline, .. } => {
                prop_assert_eq!(g2, generation + 1);
                prop_assert_eq!(absolute_deadline, f.absolute_deadline);
                prop_assert!(idle_deadline <= absolute_deadline);
                prop_assert!(now < f.idle_deadline && tag_valid && matches_current && client_matches);
                prop_assert!(binding != Binding::NotProven, "only the key's holder rotates");
            }
            Decision::ReuseDetected { presented, newest, .. } => {
                prop_assert!(tag_valid && client_matches);
                prop_assert!(presented >= 1 && presented < newest);
            }
            Decision::GraceReplay { generation: g2 } => {
                prop_assert_eq!(g2, generation);
                prop_assert_eq!(presented_gen + 1, generation);
                prop_assert!(grace_ms > 0);
                prop_assert!(binding != Binding::NotProven, "only the key's holder replays");
            }
            Decision::Slide { .. } => prop_assert!(false, "one-time-only never slides"),
            Decision::RevokeForMismatch => {
                prop_assert_eq!(binding, Binding::NotProven);
                prop_assert!(tag_valid && client_matches && now < f.idle_deadline);
                prop_assert!(presented_gen == generation || presented_gen + 1 == generation);
            }
            Decision::Refuse(_) => {}
        }
    }
}
