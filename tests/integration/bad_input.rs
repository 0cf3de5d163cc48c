//! Promise 6 and the limits of design §3: malformed tokens get a typed `Error::Malformed`
//! without touching the file; oversized or odd grant fields get `Error::InvalidInput` and
//! nothing is written; zero lifetimes are refused, `Duration::MAX` means "never" without
//! overflow; a clock that steps backwards extends no deadline.

use crate::common::{Fixture, HOUR, MINUTE, T0, records};
use std::sync::Arc;
use std::time::Duration;
use tokendb::{
    Config, Error, Grant, ManualClock, MasterKey, ParseError, RotateRefusal, Scope, StoreError,
    SweeperConfig, TokenDb, TokenStatus,
};
use tokendb_core::CoreError;

/// Every malformed variant of the two tokens given, and hostile strings of every length.
fn malformed(refresh: &str, access: &str) -> Vec<String> {
    let mut v = vec![
        String::new(),
        " ".into(),
        "tdb".into(),
        "tdb_".into(),
        "tdb_rt_".into(),
        "tdb_at_".into(),
        "x".repeat(1 << 20),
        format!("{refresh}{}", "A".repeat(1 << 20)),
        String::from_utf8_lossy(&[0xff, 0xfe, b't', b'd', b'b', 0xc3, 0x28, 0x80]).into_owned(),
        String::from_utf8_lossy(&[0xf0, 0x28, 0x8c, 0xbc].repeat(40)).into_owned(),
        format!("tdb_rt_{}", "é".repeat(51)),
        format!("tdb_at_{}", "\u{1F600}".repeat(12)),
        format!("tdb_at_{}", "\0".repeat(48)),
        refresh.replacen("tdb", "abc", 1),
        refresh.replacen("tdb", "TDB", 1),
        access.replacen("tdb_", "tdb-", 1),
        refresh.replacen("_rt_", "_xx_", 1),
        refresh.replacen("_rt_", "_at_", 1),
        access.replacen("_at_", "_rt_", 1),
        format!(" {access}"),
        format!("{access}\n"),
        format!("{access}="),
        refresh.to_uppercase(),
        refresh.replace('-', "+").replace('_', "/"),
    ];
    for t in [refresh, access] {
        // Every truncation, and the last character changed.
        v.extend((0..t.len()).filter_map(|n| t.get(..n)).map(str::to_owned));
        let mut chars: Vec<char> = t.chars().collect();
        if let Some(c) = chars.last_mut() {
            *c = if *c == 'A' { 'B' } else { 'A' };
        }
        v.push(chars.into_iter().collect());
    }
    v
}

fn grant() -> Grant {
    Grant::new("alice@example.com", "web", "openid offline_access").unwrap()
}

#[test]
fn malformed_tokens_are_typed_errors_without_disk_access() {
    let f = Fixture::new();
    let rt =
        f.db.issue_refresh(&grant().with_claims(b"{}".to_vec()))
            .unwrap();
    let at = f.db.issue_access_for_family(rt.family, None).unwrap();
    let bad = malformed(rt.token.expose(), at.token.expose());
    assert!(bad.len() > 150);
    let before = std::fs::read(f.path()).unwrap();
    for b in &bad {
        let short: String = b.chars().take(40).collect();
        assert!(
            matches!(f.db.validate(b), Err(Error::Malformed(_))),
            "validate {short:?}"
        );
        assert!(
            matches!(f.db.introspect(b), Err(Error::Malformed(_))),
            "introspect {short:?}"
        );
        assert!(
            matches!(f.db.rotate(b, "web", None), Err(Error::Malformed(_))),
            "rotate {short:?}"
        );
        assert!(
            matches!(f.db.revoke(b), Err(Error::Malformed(_))),
            "revoke {short:?}"
        );
        assert_eq!(
            Error::Malformed(ParseError::Empty).oauth_error(),
            "invalid_grant"
        );
    }
    assert!(matches!(
        f.db.validate(""),
        Err(Error::Malformed(ParseError::Empty))
    ));
    assert!(matches!(
        f.db.validate(&"x".repeat(1 << 20)),
        Err(Error::Malformed(ParseError::TooLong { len: 1_048_576, .. }))
    ));
    // Nothing was written: the file is byte for byte what it was.
    assert_eq!(std::fs::read(f.path()).unwrap(), before);
    // The real tokens still work.
    assert!(f.db.validate(rt.token.expose()).unwrap().is_active());
    assert!(f.db.introspect(at.token.expose()).unwrap().is_active());

    // No disk access at all: after close, a malformed token is still refused as malformed
    // (parsing comes before the first look at the handle), a well-formed one as closed.
    f.db.close().unwrap();
    for b in &bad {
        assert!(matches!(f.db.validate(b), Err(Error::Malformed(_))));
        assert!(matches!(f.db.introspect(b), Err(Error::Malformed(_))));
        assert!(matches!(
            f.db.rotate(b, "web", None),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(f.db.revoke(b), Err(Error::Malformed(_))));
    }
    assert!(matches!(
        f.db.validate(rt.token.expose()),
        Err(Error::Store(StoreError::Closed))
    ));
}

#[test]
fn well_formed_strangers_are_unknown() {
    let f = Fixture::new();
    let rt = f.db.issue_refresh(&grant()).unwrap();
    // Another database's tokens have the right shape and checksum but are unknown here.
    let other = Fixture::new();
    let foreign = other.db.issue_refresh(&grant()).unwrap();
    let foreign_at = other.db.issue_access(&grant()).unwrap();
    for t in [foreign.token.expose(), foreign_at.token.expose()] {
        assert_eq!(f.db.validate(t).unwrap().status, TokenStatus::Unknown);
        assert!(!f.db.introspect(t).unwrap().is_active());
        assert_eq!(f.db.revoke(t).unwrap(), tokendb::Revoked::default());
    }
    assert!(matches!(
        f.db.rotate(foreign.token.expose(), "web", None),
        Err(Error::Refused(RotateRefusal::Unknown))
    ));
    // An access token presented for rotation is unknown as a refresh token.
    assert!(matches!(
        f.db.rotate(foreign_at.token.expose(), "web", None),
        Err(Error::Refused(RotateRefusal::Unknown))
    ));
    assert!(f.db.validate(rt.token.expose()).unwrap().is_active());
}

#[test]
fn oversized_and_odd_grants_are_refused_and_nothing_is_written() {
    let f = Fixture::new();
    let before = std::fs::read(f.path()).unwrap();
    let ok = grant();
    let mut refused: Vec<(&str, Grant)> = vec![
        (
            "claims 16 KiB + 1",
            ok.clone().with_claims(vec![b'x'; 16 * 1024 + 1]),
        ),
        ("claims 1 MiB", ok.clone().with_claims(vec![0; 1 << 20])),
    ];
    let mut g = ok.clone();
    g.subject = "s".repeat(1025);
    refused.push(("subject 1025 bytes", g));
    let mut g = ok.clone();
    g.subject = "é".repeat(513); // 1026 bytes in 513 characters: the limit is in bytes
    refused.push(("subject 1026 bytes of é", g));
    let mut g = ok.clone();
    g.client_id = "c".repeat(513);
    refused.push(("client id 513 bytes", g));
    for (what, text) in [
        ("empty", ""),
        ("newline", "a\nb"),
        ("NUL", "a\0b"),
        ("escape", "\u{1b}[31m"),
        ("DEL", "a\u{7f}"),
    ] {
        let mut g = ok.clone();
        g.subject = text.to_owned();
        refused.push((what, g.clone()));
        g.subject = ok.subject.clone();
        g.client_id = text.to_owned();
        refused.push((what, g));
    }
    for (what, g) in &refused {
        for r in [
            f.db.issue_refresh(g).map(|_| ()),
            f.db.issue_access(g).map(|_| ()),
        ] {
            match r {
                Err(
                    e @ Error::InvalidInput(CoreError::TooLarge { .. } | CoreError::BadText(_)),
                ) => {
                    assert_eq!(e.oauth_error(), "invalid_request", "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }
    assert_eq!(records(&f.db), 0);
    assert_eq!(
        std::fs::read(f.path()).unwrap(),
        before,
        "a refused issue wrote to the file"
    );

    // The limits themselves are accepted.
    let mut g = ok.clone().with_claims(vec![0xff; 16 * 1024]);
    g.subject = "s".repeat(1024);
    g.client_id = "c".repeat(512);
    g.scope = Scope::parse(
        &(0..128)
            .map(|i| format!("s{i:03}"))
            .collect::<Vec<_>>()
            .join(" "),
    )
    .unwrap();
    let rt = f.db.issue_refresh(&g).unwrap();
    let i = f.db.introspect(rt.token.expose()).unwrap();
    assert_eq!(i.extra(), Some(&g.claims[..]));
    assert_eq!(i.sub(), Some(g.subject.as_str()));
    assert_eq!(i.scope().map(Scope::len), Some(128));
    // Unicode that is not a control character is fine in subjects and client ids.
    let mut g = ok.clone();
    g.subject = "Zoë 🦀 李".into();
    g.client_id = "クライアント".into();
    let at = f.db.issue_access(&g).unwrap();
    assert_eq!(
        f.db.introspect(at.token.expose()).unwrap().sub(),
        Some("Zoë 🦀 李")
    );
}

#[test]
fn scopes_are_strict() {
    let long = "a".repeat(4097);
    let many = (0..129)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    for (what, text) in [
        ("4097 bytes", long.as_str()),
        ("129 tokens", many.as_str()),
        ("tab", "openid\tprofile"),
        ("newline", "openid\nprofile"),
        ("quote", "open\"id"),
        ("backslash", "open\\id"),
        ("non-ASCII", "openid café"),
        ("NUL", "openid\0"),
        ("DEL", "openid\u{7f}"),
        ("emoji", "🦀"),
    ] {
        match Grant::new("alice", "web", text) {
            Err(e @ Error::InvalidInput(CoreError::TooLarge { .. } | CoreError::BadScope(_))) => {
                assert!(
                    matches!(e.oauth_error(), "invalid_scope" | "invalid_request"),
                    "{what}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(Grant::new("alice", "web", &"a".repeat(4096)).is_ok());
    assert_eq!(
        Grant::new("alice", "web", "  b a  a ")
            .unwrap()
            .scope
            .to_string(),
        "a b"
    );
    assert!(Grant::new("alice", "web", "").unwrap().scope.is_empty());
    // Printable ASCII other than space, '"' and '\' is allowed, RFC 6749 §3.3.
    assert!(Grant::new("alice", "web", "!#$%&'()*+,-./:;<=>?@[]^_`{|}~").is_ok());

    // A requested scope at rotation goes through the same parser; a wider one is refused.
    let f = Fixture::new();
    let rt = f.db.issue_refresh(&grant()).unwrap();
    let wider = Scope::parse("openid admin").unwrap();
    let err =
        f.db.rotate(rt.token.expose(), "web", Some(&wider))
            .unwrap_err();
    assert!(matches!(err, Error::Refused(RotateRefusal::ScopeWidened)));
    assert_eq!(err.oauth_error(), "invalid_scope");
    assert!(
        f.db.validate(rt.token.expose()).unwrap().is_active(),
        "a refused rotation spent the token"
    );
}

#[test]
fn hostile_strings_in_other_arguments() {
    let f = Fixture::new();
    let rt = f.db.issue_refresh(&grant()).unwrap();
    let huge = "c".repeat(1 << 20);
    // A client id of any size is only hashed: a mismatch, not a crash.
    assert!(matches!(
        f.db.rotate(rt.token.expose(), &huge, None),
        Err(Error::Refused(RotateRefusal::ClientMismatch))
    ));
    assert!(matches!(
        f.db.rotate(rt.token.expose(), "web\0", None),
        Err(Error::Refused(RotateRefusal::ClientMismatch))
    ));
    assert_eq!(
        f.db.revoke_subject(&huge, Some("")).unwrap(),
        tokendb::Revoked::default()
    );
    assert_eq!(
        f.db.revoke_client("\u{0}").unwrap(),
        tokendb::Revoked::default()
    );
    assert!(f.db.validate(rt.token.expose()).unwrap().is_active());
}

#[test]
fn lifetimes_zero_and_max() {
    let clock = Arc::new(ManualClock::new(T0));
    let base = || Fixture::base(&clock);
    for (what, b) in [
        (
            "absolute 0",
            base().refresh_lifetime(Duration::ZERO, Duration::from_secs(60)),
        ),
        (
            "idle 0",
            base().refresh_lifetime(Duration::from_secs(60), Duration::ZERO),
        ),
        ("access 0", base().access_lifetime(Duration::ZERO)),
        ("grace 61 s", base().grace_period(Duration::from_secs(61))),
    ] {
        assert!(matches!(b.build(), Err(Error::Config(_))), "{what}");
    }

    // Duration::MAX and u64::MAX ms mean "never", even with the clock near the end of time.
    for start in [T0, u64::MAX - 5 * MINUTE] {
        for life in [Duration::MAX, Duration::from_millis(u64::MAX)] {
            let f = Fixture::with(|b| {
                b.refresh_lifetime(life, life)
                    .access_lifetime(life)
                    .grace_period(Duration::from_secs(60))
            });
            f.clock.set(start);
            let rt = f.db.issue_refresh(&grant()).unwrap();
            assert_eq!(rt.absolute.at_ms, u64::MAX);
            assert_eq!(rt.idle.at_ms, u64::MAX);
            assert_eq!(rt.absolute.expires_in, (u64::MAX - start) / 1000);
            let at = f.db.issue_access_for_family(rt.family, None).unwrap();
            assert_eq!(at.expires.at_ms, u64::MAX);
            f.clock.set(u64::MAX - 1);
            let next = f.db.rotate(rt.token.expose(), "web", None).unwrap();
            assert_eq!(next.absolute.at_ms, u64::MAX);
            assert!(f.db.validate(next.token.expose()).unwrap().is_active());
            assert!(f.db.introspect(at.token.expose()).unwrap().is_active());
            assert_eq!(f.db.sweep_now(None).unwrap().families, 0);
            // The very last millisecond: a deadline is the first instant a token is invalid.
            f.clock.set(u64::MAX);
            assert_eq!(
                f.db.validate(next.token.expose()).unwrap().status,
                TokenStatus::ExpiredAbsolute
            );
            assert!(!f.db.introspect(at.token.expose()).unwrap().is_active());
            let swept = f.db.sweep_now(None).unwrap();
            assert_eq!((swept.families, swept.tokens), (1, 1));
        }
    }

    // A one-millisecond lifetime works too.
    let f = Fixture::with(|b| {
        b.refresh_lifetime(Duration::from_millis(1), Duration::from_millis(1))
            .access_lifetime(Duration::from_millis(1))
    });
    let rt = f.db.issue_refresh(&grant()).unwrap();
    assert!(f.db.validate(rt.token.expose()).unwrap().is_active());
    f.advance(1);
    assert_eq!(
        f.db.validate(rt.token.expose()).unwrap().status,
        TokenStatus::ExpiredAbsolute
    );
}

#[test]
fn clock_going_backwards_extends_nothing() {
    let f = Fixture::with(|b| {
        b.refresh_lifetime(
            Duration::from_millis(8 * HOUR),
            Duration::from_millis(2 * HOUR),
        )
    });
    f.clock.set(T0 + HOUR);
    let rt = f.db.issue_refresh(&grant()).unwrap();
    let absolute = rt.absolute.at_ms;
    assert_eq!(absolute, T0 + 9 * HOUR);

    // The clock steps back an hour: within this handle, time does not run backwards, so the
    // next rotation neither precedes the issue nor earns a later idle deadline than now allows.
    f.clock.set(T0);
    let v = f.db.validate(rt.token.expose()).unwrap();
    assert!(v.is_active());
    assert_eq!(v.absolute.unwrap().at_ms, absolute);
    let next = f.db.rotate(rt.token.expose(), "web", None).unwrap();
    assert_eq!(next.absolute.at_ms, absolute);
    assert_eq!(next.idle.at_ms, T0 + 3 * HOUR);
    let i = f.db.introspect(next.token.expose()).unwrap();
    assert_eq!(i.iat(), Some((T0 + HOUR) / 1000));

    // Past the idle deadline, then back before it: still expired within this handle.
    f.clock.set(T0 + 3 * HOUR);
    assert_eq!(
        f.db.validate(next.token.expose()).unwrap().status,
        TokenStatus::ExpiredIdle
    );
    f.clock.set(T0 + 2 * HOUR);
    assert_eq!(
        f.db.validate(next.token.expose()).unwrap().status,
        TokenStatus::ExpiredIdle
    );
    assert!(matches!(
        f.db.rotate(next.token.expose(), "web", None),
        Err(Error::Refused(RotateRefusal::ExpiredIdle))
    ));
    // The old generation is refused too: the family is expired (expiry is checked before
    // reuse, so an expired family is not revoked).
    assert!(matches!(
        f.db.rotate(rt.token.expose(), "web", None),
        Err(Error::Refused(RotateRefusal::ExpiredIdle))
    ));
    // A sweep with the clock stepped back deletes nothing that is not expired at the latest
    // time seen, and nothing panics.
    f.clock.set(T0);
    let swept = f.db.sweep_now(None).unwrap();
    assert_eq!(swept.families, 1);

    // A fresh handle starts from the clock as it is: a family issued now has deadlines from
    // that earlier time; a record written later is never moved.
    f.db.close().unwrap();
    let clock = Arc::new(ManualClock::new(T0 + 10 * HOUR));
    let config = Fixture::base(&clock)
        .refresh_lifetime(
            Duration::from_millis(8 * HOUR),
            Duration::from_millis(2 * HOUR),
        )
        .build()
        .unwrap();
    let db = TokenDb::open(f.path(), &f.master, config).unwrap();
    let late = db.issue_refresh(&grant()).unwrap();
    clock.set(T0);
    let back = db.validate(late.token.expose()).unwrap();
    assert!(back.is_active());
    assert_eq!(back.absolute.unwrap().at_ms, T0 + 18 * HOUR);
    let r = db.rotate(late.token.expose(), "web", None).unwrap();
    assert_eq!(r.absolute.at_ms, T0 + 18 * HOUR);
    assert!(r.idle.at_ms <= T0 + 12 * HOUR);
    db.close().unwrap();
}

#[test]
fn wrong_master_key_and_garbage_files_are_refused_untouched() {
    let f = Fixture::new();
    f.db.issue_refresh(&grant()).unwrap();
    f.db.close().unwrap();
    let before = std::fs::read(f.path()).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let config = || {
        Config::builder()
            .clock(clock.clone())
            .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
            .build()
            .unwrap()
    };
    assert!(matches!(
        TokenDb::open(f.path(), &MasterKey::generate(), config()),
        Err(Error::Store(StoreError::WrongMasterKey))
    ));
    assert_eq!(std::fs::read(f.path()).unwrap(), before);
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("text", b"hello, world\n".to_vec()),
        ("zeros", vec![0; 1 << 16]),
        ("redb magic only", before.get(..9).unwrap().to_vec()),
        ("first page only", before.get(..4096).unwrap().to_vec()),
    ] {
        let path = f.dir.path().join(format!("{name}.tdb"));
        std::fs::write(&path, &bytes).unwrap();
        assert!(TokenDb::open(&path, &f.master, config()).is_err(), "{name}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was modified");
    }
}
