//! A refusal costs no write: whatever the caller's thread can refuse (a forged tag, an unknown or
//! already revoked token on revocation, a family that refuses an access token) never reaches the
//! writer, so forged but well-formed tokens cannot be used to load the disk with commits and
//! fsyncs.

use crate::common::{Fixture, T0, grant};
use tokendb::{Error, RotateRefusal, TokenStatus};
use tokendb_core::{AccessToken, FamilyId, KeyRing, RefreshToken, TokenFormat};

#[test]
fn ten_thousand_forged_tokens_cost_no_commit() {
    let f = Fixture::new();
    let genuine = f.db.issue_refresh(&grant(1)).unwrap();
    let access = f.db.issue_access_for_family(genuine.family, None).unwrap();
    let format = TokenFormat::default();
    // Tokens minted under another database's keys: right format and checksum, wrong tag. Half
    // of the refresh tokens name the genuine family, every generation from 1 up.
    let other = KeyRing::generate();
    let mut forged = Vec::with_capacity(10_000);
    for i in 0..5_000u64 {
        let family = if i % 2 == 0 {
            genuine.family
        } else {
            FamilyId::generate()
        };
        forged.push(format.encode_refresh(&RefreshToken::mint(&other, family, 1 + i % 7)));
        forged.push(format.encode_access(&AccessToken::mint(T0 + 3_600_000)));
    }
    let before = f.db.commits();
    for t in &forged {
        let t = t.expose();
        assert!(matches!(
            f.db.rotate(t, "client-1", None),
            Err(Error::Refused(RotateRefusal::Unknown))
        ));
        assert_eq!(f.db.revoke(t).unwrap(), tokendb::Revoked::default());
        assert_eq!(f.db.validate(t).unwrap().status, TokenStatus::Unknown);
    }
    assert_eq!(f.db.commits(), before, "a forged token wrote to the file");
    let rt = genuine.token.expose();

    // Revoking: the first revocation writes; revoking again, and anything of the revoked
    // family, does not.
    assert_eq!(f.db.revoke(rt).unwrap().families, 1);
    let after_revoke = f.db.commits();
    assert_eq!(after_revoke, before + 1);
    assert_eq!(f.db.revoke(rt).unwrap(), tokendb::Revoked::default());
    assert_eq!(
        f.db.revoke(access.token.expose()).unwrap(),
        tokendb::Revoked::default()
    );
    assert_eq!(
        f.db.revoke_family(genuine.family).unwrap(),
        tokendb::Revoked::default()
    );
    assert_eq!(
        f.db.revoke_family(FamilyId::generate()).unwrap(),
        tokendb::Revoked::default()
    );
    assert!(matches!(
        f.db.issue_access_for_family(genuine.family, None),
        Err(Error::Refused(RotateRefusal::Revoked(_)))
    ));
    assert_eq!(f.db.commits(), after_revoke, "a refusal wrote to the file");
}
