//! Spans and metrics: every operation of a lifecycle gets a span with its result and timings,
//! and nothing recorded — no span field, no metric name or label — holds a token, a secret, a
//! subject, a client id, a scope or a claim.

use crate::common::Fixture;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokendb::{Grant, Scope};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Every span's name and fields as text, in the order they were recorded, while `on`.
///
/// It is the process-wide subscriber of this test binary: a scoped one (`with_default`) misses
/// spans whose call sites another test's thread, with no subscriber, registered first.
#[derive(Default)]
struct Capture {
    on: std::sync::atomic::AtomicBool,
    next: AtomicU64,
    spans: Mutex<Vec<(u64, String)>>,
}

fn capture() -> &'static Arc<Capture> {
    static C: OnceLock<Arc<Capture>> = OnceLock::new();
    C.get_or_init(|| {
        let c = Arc::new(Capture::default());
        tracing::subscriber::set_global_default(Recorder(Arc::clone(&c))).unwrap();
        c
    })
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }
}

struct Recorder(Arc<Capture>);

impl Subscriber for Recorder {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // Asked again at each span: capturing is switched on and off.
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, _: &Metadata<'_>) -> bool {
        self.0.on.load(Ordering::Acquire)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut text = span.metadata().name().to_owned();
        span.record(&mut Fields(&mut text));
        self.0.spans.lock().unwrap().push((id, text));
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.0.spans.lock().unwrap();
        if let Some((_, text)) = spans.iter_mut().find(|(id, _)| *id == span.into_u64()) {
            values.record(&mut Fields(text));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = String::from("event");
        event.record(&mut Fields(&mut text));
        self.0.spans.lock().unwrap().push((0, text));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

const SUBJECT: &str = "alice.secret-subject@example.com";
const CLIENT: &str = "client-with-a-recognisable-id";
const CLAIMS: &str = "{\"acr\":\"claim-value-xyz\"}";

#[test]
fn a_lifecycle_leaves_spans_with_results_and_timings_and_nothing_secret() {
    let capture = capture();
    let f = Fixture::with(|b| b.grace_period(Duration::from_secs(10)));
    let mut secrets: Vec<String> = vec![SUBJECT.into(), CLIENT.into(), CLAIMS.into()];
    capture.on.store(true, Ordering::Release);
    {
        let grant = Grant::new(SUBJECT, CLIENT, "openid offline_access profile-scope")
            .unwrap()
            .with_claims(CLAIMS);
        let rt = f.db.issue_refresh(&grant).unwrap();
        let at = f.db.issue_access_for_family(rt.family, None).unwrap();
        f.db.validate(at.token.expose()).unwrap();
        f.db.introspect(rt.token.expose()).unwrap();
        let narrow = Scope::parse("openid").unwrap();
        let next =
            f.db.refresh(rt.token.expose(), CLIENT, Some(&narrow))
                .unwrap();
        let again =
            f.db.rotate(next.refresh.token.expose(), CLIENT, None)
                .unwrap();
        // Reuse: revokes the family.
        assert!(f.db.rotate(rt.token.expose(), CLIENT, None).is_err());
        let standalone = f.db.issue_access(&grant).unwrap();
        f.db.revoke(standalone.token.expose()).unwrap();
        f.db.revoke_subject(SUBJECT, Some(CLIENT)).unwrap();
        f.db.validate("tdb_at_malformed").unwrap_err();
        for t in [
            &rt.token,
            &at.token,
            &next.refresh.token,
            &next.access.token,
        ]
        .into_iter()
        .chain([&again.token, &standalone.token])
        {
            secrets.push(t.expose().to_owned());
            // The body of a token (after the prefix): its secret part, whatever the encoding.
            secrets.push(t.expose()[7..].to_owned());
        }
    }
    capture.on.store(false, Ordering::Release);
    let spans = capture.spans.lock().unwrap();
    let all: Vec<&str> = spans.iter().map(|(_, s)| s.as_str()).collect();
    for s in &all {
        for secret in &secrets {
            assert!(!s.contains(secret.as_str()), "{secret:?} in a span: {s}");
        }
        assert!(!s.contains("profile-scope"), "a scope in a span: {s}");
    }
    let find = |op: &str, result: &str| {
        all.iter()
            .any(|s| s.contains(&format!("op={op}")) && s.contains(&format!("result={result}")))
    };
    assert!(find("issue_refresh", "ok"), "{all:#?}");
    assert!(find("issue_access_for_family", "ok"), "{all:#?}");
    assert!(find("validate", "active"), "{all:#?}");
    assert!(find("introspect", "active"), "{all:#?}");
    assert!(find("refresh", "rotated"), "{all:#?}");
    assert!(find("rotate", "rotated"), "{all:#?}");
    assert!(find("rotate", "reuse_detected"), "{all:#?}");
    assert!(find("revoke", "revoked"), "{all:#?}");
    assert!(find("revoke_subject", "nothing_to_revoke") || find("revoke_subject", "revoked"));
    assert!(find("validate", "malformed"), "{all:#?}");
    // Writes carry the writer's timings.
    let rotated = all
        .iter()
        .find(|s| s.contains("op=rotate") && s.contains("result=rotated"))
        .unwrap();
    for field in ["queue_wait_us=", "commit_us=", "batch=", "elapsed_us="] {
        assert!(rotated.contains(field), "{field} missing: {rotated}");
    }
}

/// The process-wide metrics recorder of this test binary (installed once).
fn snapshotter() -> &'static metrics_util::debugging::Snapshotter {
    static S: OnceLock<metrics_util::debugging::Snapshotter> = OnceLock::new();
    S.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let s = recorder.snapshotter();
        recorder.install().unwrap();
        s
    })
}

#[test]
fn metrics_count_operations_reuse_revocations_sweeps_and_commits() {
    use metrics_util::debugging::DebugValue;
    let snap = snapshotter();
    let f = Fixture::new();
    let grant = Grant::new(SUBJECT, CLIENT, "openid").unwrap();
    let rt = f.db.issue_refresh(&grant).unwrap();
    f.db.rotate(rt.token.expose(), CLIENT, None).unwrap();
    assert!(f.db.rotate(rt.token.expose(), CLIENT, None).is_err());
    f.db.issue_access(&grant).unwrap();
    f.advance(2 * crate::common::HOUR);
    f.db.sweep_now(None).unwrap();
    let metrics = snap.snapshot().into_vec();
    let mut seen = Vec::new();
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        metrics.iter().find_map(|(k, _, _, v)| {
            let key = k.key();
            let matches = key.name() == name
                && labels
                    .iter()
                    .all(|(lk, lv)| key.labels().any(|l| l.key() == *lk && l.value() == *lv));
            matches.then(|| match v {
                DebugValue::Counter(c) => *c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(h) => h.len() as f64,
            })
        })
    };
    for (k, _, _, _) in &metrics {
        let key = k.key();
        let mut text = key.name().to_owned();
        for l in key.labels() {
            let _ = write!(text, " {}={}", l.key(), l.value());
        }
        assert!(!text.contains(SUBJECT) && !text.contains(CLIENT), "{text}");
        seen.push(text);
    }
    let at_least_one = |name: &str, labels: &[(&str, &str)]| {
        assert!(
            value(name, labels).is_some_and(|v| v >= 1.0),
            "{name} {labels:?} not recorded; seen {seen:#?}"
        );
    };
    at_least_one(
        "tokendb_operations_total",
        &[("op", "rotate"), ("result", "rotated")],
    );
    at_least_one(
        "tokendb_operations_total",
        &[("op", "rotate"), ("result", "reuse_detected")],
    );
    at_least_one("tokendb_operation_seconds", &[("op", "issue_access")]);
    at_least_one("tokendb_reuse_detected_total", &[]);
    at_least_one(
        "tokendb_families_revoked_total",
        &[("reason", "reuse_detected")],
    );
    at_least_one(
        "tokendb_sweeper_deleted_total",
        &[("kind", "access_tokens")],
    );
    at_least_one("tokendb_sweeper_passes_total", &[]);
    at_least_one("tokendb_writer_batch_size", &[]);
    at_least_one("tokendb_writer_commit_seconds", &[]);
}
