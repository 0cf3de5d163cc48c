//! Spans and metrics of each operation. Nothing recorded here ever holds a token, a secret, a
//! subject, a client id, a scope or a claim: only the operation's name, a label for its result,
//! its timings and counts. Names, units and labels are listed in `docs/operations.md`.

use crate::error::{Error, RotateRefusal};
use crate::types::TokenStatus;
use std::time::Instant;
use tokendb_backend::{AccessIssue, FamilyIssue, Revocation, StoreError, Timing};
use tokendb_rotation::{Refusal, Rotation};
use tracing::field::Empty;

/// One operation in flight: its span and its start.
pub(crate) struct Op {
    name: &'static str,
    span: tracing::Span,
    started: Instant,
}

impl Op {
    /// A write (an `info` span).
    pub(crate) fn write(name: &'static str) -> Self {
        Self {
            name,
            span: tracing::info_span!(
                "tokendb",
                op = name,
                result = Empty,
                queue_wait_us = Empty,
                commit_us = Empty,
                batch = Empty,
                elapsed_us = Empty
            ),
            started: Instant::now(),
        }
    }

    /// Records how it ended: the span's fields, `tokendb_operations_total` and
    /// `tokendb_operation_seconds`.
    pub(crate) fn finish(self, result: &'static str, timing: Option<Timing>) {
        let elapsed = self.started.elapsed();
        if !self.span.is_disabled() {
            self.span.record("result", result);
            self.span.record(
                "elapsed_us",
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            );
            if let Some(t) = timing {
                let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                self.span.record("queue_wait_us", us(t.queue_wait));
                self.span.record("commit_us", us(t.commit));
                self.span.record("batch", t.batch);
            }
        }
        metrics::counter!("tokendb_operations_total", "op" => self.name, "result" => result)
            .increment(1);
        metrics::histogram!("tokendb_operation_seconds", "op" => self.name)
            .record(elapsed.as_secs_f64());
    }
}

/// The lookups counted by `tokendb_operations_total`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lookup {
    Validate = 0,
    Introspect = 1,
}

/// The results a lookup can end with, as labels; anything else counts as `error`.
const LOOKUP_RESULTS: [&str; 11] = [
    "active",
    "unknown",
    "expired_absolute",
    "expired_idle",
    "revoked",
    "rotated",
    "malformed",
    "closed",
    "failed",
    "damaged",
    "error",
];

/// Lookup counters, registered once when the database opens: a lookup takes microseconds,
/// and building a labelled metric key on each would cost it a fifth more (callgrind). So an
/// embedder installs its metrics recorder before opening the database; writes register their
/// metrics as they go and see a recorder installed at any time.
pub(crate) struct LookupMetrics {
    counters: [[metrics::Counter; LOOKUP_RESULTS.len()]; 2],
}

impl LookupMetrics {
    pub(crate) fn register() -> Self {
        let row = |op: &'static str| {
            LOOKUP_RESULTS.map(|result| {
                metrics::counter!("tokendb_operations_total", "op" => op, "result" => result)
            })
        };
        Self {
            counters: [row("validate"), row("introspect")],
        }
    }
}

/// One lookup in flight: a `debug` span (there are many), timed only when a subscriber wants
/// it.
pub(crate) struct LookupOp {
    op: Lookup,
    span: tracing::Span,
    started: Option<Instant>,
}

impl LookupOp {
    pub(crate) fn start(op: Lookup) -> Self {
        let name = match op {
            Lookup::Validate => "validate",
            Lookup::Introspect => "introspect",
        };
        let span = tracing::debug_span!("tokendb", op = name, result = Empty, elapsed_us = Empty);
        let started = (!span.is_disabled()).then(Instant::now);
        Self { op, span, started }
    }

    pub(crate) fn finish(self, metrics: &LookupMetrics, result: &'static str) {
        if let Some(started) = self.started {
            self.span.record("result", result);
            self.span.record(
                "elapsed_us",
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            );
        }
        let i = LOOKUP_RESULTS
            .iter()
            .position(|r| *r == result)
            .unwrap_or(LOOKUP_RESULTS.len() - 1);
        if let Some(c) = metrics
            .counters
            .get(self.op as usize)
            .and_then(|row| row.get(i))
        {
            c.increment(1);
        }
    }
}

/// The label of a lookup's answer.
pub(crate) fn status_label(s: TokenStatus) -> &'static str {
    match s {
        TokenStatus::Active => "active",
        TokenStatus::Unknown => "unknown",
        TokenStatus::ExpiredAbsolute => "expired_absolute",
        TokenStatus::ExpiredIdle => "expired_idle",
        TokenStatus::Revoked(_) => "revoked",
        TokenStatus::Rotated => "rotated",
    }
}

/// A label for how an operation ended, for spans and metrics.
pub(crate) trait Label {
    /// The label.
    fn label(&self) -> &'static str;
}

fn refusal_label(r: RotateRefusal) -> &'static str {
    match r {
        RotateRefusal::Unknown => "refused_unknown",
        RotateRefusal::Revoked(_) => "refused_revoked",
        RotateRefusal::ExpiredAbsolute => "refused_expired_absolute",
        RotateRefusal::ExpiredIdle => "refused_expired_idle",
        RotateRefusal::ClientMismatch => "refused_client_mismatch",
        RotateRefusal::ScopeWidened => "refused_scope_widened",
        RotateRefusal::ReuseDetected { .. } => "reuse_detected",
        RotateRefusal::ConfirmationMismatch { .. } => "refused_confirmation_mismatch",
    }
}

impl Label for Error {
    fn label(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "malformed",
            Error::Refused(r) => refusal_label(*r),
            Error::InvalidInput(_) | Error::BatchItem { .. } | Error::BatchTooLarge { .. } => {
                "invalid_input"
            }
            Error::CapReached { .. } => "cap_reached",
            Error::FamilyNotFound => "family_not_found",
            Error::Store(e) => e.label(),
            _ => "error",
        }
    }
}

impl Label for StoreError {
    fn label(&self) -> &'static str {
        match self {
            StoreError::Closed => "closed",
            StoreError::Failed(_) => "failed",
            StoreError::Corrupt(_) | StoreError::Damaged(_) => "damaged",
            _ => "storage_error",
        }
    }
}

impl<T: Label> Label for Result<T, StoreError> {
    fn label(&self) -> &'static str {
        match self {
            Ok(t) => t.label(),
            Err(e) => e.label(),
        }
    }
}

impl Label for FamilyIssue {
    fn label(&self) -> &'static str {
        match self {
            FamilyIssue::Issued { .. } => "ok",
            FamilyIssue::CapReached { .. } => "cap_reached",
            _ => "other",
        }
    }
}

impl Label for AccessIssue {
    fn label(&self) -> &'static str {
        match self {
            AccessIssue::Issued => "ok",
            AccessIssue::FamilyNotFound => "family_not_found",
            AccessIssue::Refused(_) => "refused",
            _ => "other",
        }
    }
}

impl Label for Rotation {
    fn label(&self) -> &'static str {
        match self {
            Rotation::Rotated { .. } => "rotated",
            Rotation::GraceReplay { .. } => "grace_replay",
            Rotation::Slid { .. } => "slid",
            Rotation::ReuseDetected { .. } => "reuse_detected",
            Rotation::ConfirmationMismatch { .. } => "refused_confirmation_mismatch",
            Rotation::Refused(r) => match r {
                Refusal::ConfirmationMismatch => "refused_confirmation_mismatch",
                Refusal::ClientMismatch => "refused_client_mismatch",
                Refusal::Revoked(_) => "refused_revoked",
                Refusal::ExpiredAbsolute => "refused_expired_absolute",
                Refusal::ExpiredIdle => "refused_expired_idle",
                Refusal::ScopeWidened => "refused_scope_widened",
                _ => "refused_unknown",
            },
            _ => "other",
        }
    }
}

impl Label for bool {
    fn label(&self) -> &'static str {
        if *self { "new" } else { "replayed" }
    }
}

impl Label for u64 {
    fn label(&self) -> &'static str {
        "ok"
    }
}

impl Label for Revocation {
    fn label(&self) -> &'static str {
        if self.families + self.tokens > 0 {
            "revoked"
        } else {
            "nothing_to_revoke"
        }
    }
}

impl Label for Option<Revocation> {
    fn label(&self) -> &'static str {
        match self {
            Some(r) => r.label(),
            None => "unknown",
        }
    }
}
