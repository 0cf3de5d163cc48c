//! Result rows and the report: a table for people, a JSON document for tools.
//!
//! The JSON document has this shape, keys in this order (`mode` is left out when a row has none; `bytes_per_token` and
//! `open_ms` are `null` until tokendb's measurements fill them in; `notes` says what was configured,
//! skipped or failed):
//!
//! ```json
//! {"machine": "...", "tokens": 1000000,
//!  "results": [{"system": "redb", "op": "get", "threads": 1, "ops_per_sec": 1.0, "p50_us": 1.0, "p99_us": 1.0}],
//!  "bytes_per_token": null, "open_ms": null, "notes": ["..."]}
//! ```

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::harness::Measurement;

/// One measured figure: a system doing one operation at one concurrency.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    /// The system measured, e.g. `tokendb`, `redb`, `sqlite`, `redis`, `postgres`.
    pub system: String,
    /// The operation, e.g. `get`, `validate`, `issue`, `rotate`.
    pub op: String,
    /// How it was done when that matters, e.g. `group commit`, `per-op`, `50 conns on 1 thread`.
    pub mode: Option<String>,
    /// Concurrent threads, clients or connections.
    pub threads: usize,
    /// Median over the rounds of the operations per second.
    pub ops_per_sec: f64,
    /// Median latency, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
}

impl ResultRow {
    /// A row from a harness measurement.
    pub fn new(
        system: &str,
        op: &str,
        mode: Option<&str>,
        threads: usize,
        m: &Measurement,
    ) -> Self {
        Self {
            system: system.to_owned(),
            op: op.to_owned(),
            mode: mode.map(str::to_owned),
            threads,
            ops_per_sec: m.ops_per_sec,
            p50_us: m.p50_us,
            p99_us: m.p99_us,
        }
    }

    /// The row's JSON fields, in document order; `mode` is left out when there is none.
    pub fn json_fields(&self) -> Vec<(&'static str, Value)> {
        let mut fields = vec![("system", json!(self.system)), ("op", json!(self.op))];
        if let Some(mode) = &self.mode {
            fields.push(("mode", json!(mode)));
        }
        fields.extend([
            ("threads", json!(self.threads)),
            ("ops_per_sec", json!(round_to(self.ops_per_sec, 1))),
            ("p50_us", json!(round_to(self.p50_us, 3))),
            ("p99_us", json!(round_to(self.p99_us, 3))),
        ]);
        fields
    }

    /// The row as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.json_fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }
}

/// Everything one run of the comparison found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// The machine, from [`crate::machine::describe`].
    pub machine: String,
    /// Number of tokens each system was loaded with.
    pub tokens: u64,
    /// The measured rows, in the order measured.
    pub results: Vec<ResultRow>,
    /// tokendb's database file size divided by its number of tokens.
    pub bytes_per_token: Option<f64>,
    /// Time tokendb takes to open its loaded database, in milliseconds.
    pub open_ms: Option<f64>,
    /// Named figures that are not throughputs (storage per family on PostgreSQL, say).
    pub figures: Vec<(String, f64)>,
    /// What was configured, skipped or failed, one sentence each.
    pub notes: Vec<String>,
    /// How many of the notes report a failure (a system that could not be set up, a measurement
    /// that erred); not part of the JSON, for the exit status of `compare --strict`.
    pub failures: usize,
}

impl Report {
    /// An empty report for this machine and data set size.
    pub fn new(machine: String, tokens: u64) -> Self {
        Self {
            machine,
            tokens,
            ..Self::default()
        }
    }

    /// Adds a row.
    pub fn push(&mut self, row: ResultRow) {
        self.results.push(row);
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Adds a note that reports a failure, and counts it.
    pub fn fail(&mut self, note: impl Into<String>) {
        self.failures += 1;
        self.note(note);
    }

    /// The report's JSON fields, in document order.
    fn json_fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("machine", json!(self.machine)),
            ("tokens", json!(self.tokens)),
            (
                "results",
                Value::Array(self.results.iter().map(ResultRow::to_json).collect()),
            ),
            (
                "bytes_per_token",
                json!(self.bytes_per_token.map(|b| round_to(b, 1))),
            ),
            ("open_ms", json!(self.open_ms.map(|ms| round_to(ms, 3)))),
            (
                "figures",
                Value::Object(
                    self.figures
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(round_to(*v, 1))))
                        .collect(),
                ),
            ),
            ("notes", json!(self.notes)),
        ]
    }

    /// The report as one JSON value (see the module docs for its shape). A `serde_json::Value`
    /// object sorts its keys; [`Report::to_json_string`] keeps the documented order.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.json_fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    /// The report as one line of JSON, keys in the documented order (rows too). Written by hand
    /// rather than by turning on `serde_json`'s `preserve_order`, a feature that would change key
    /// order for every crate of the workspace built together with this one.
    pub fn to_json_string(&self) -> String {
        let rows: Vec<String> = self
            .results
            .iter()
            .map(|r| ordered_object(&r.json_fields()))
            .collect();
        let parts: Vec<String> = self
            .json_fields()
            .iter()
            .map(|(key, value)| {
                let value = if *key == "results" {
                    format!("[{}]", rows.join(","))
                } else {
                    value.to_string()
                };
                format!("{}:{value}", Value::from(*key))
            })
            .collect();
        format!("{{{}}}", parts.join(","))
    }

    /// The report as an aligned text table, with the machine line above and the notes below.
    pub fn table(&self) -> String {
        let header = [
            "system", "op", "mode", "threads", "ops/s", "p50 µs", "p99 µs",
        ];
        let rows: Vec<[String; 7]> = self
            .results
            .iter()
            .map(|r| {
                [
                    r.system.clone(),
                    r.op.clone(),
                    r.mode.clone().unwrap_or_default(),
                    r.threads.to_string(),
                    group_thousands(r.ops_per_sec),
                    format!("{:.1}", r.p50_us),
                    format!("{:.1}", r.p99_us),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let _ = writeln!(out, "machine: {}", self.machine);
        let _ = writeln!(out, "tokens:  {}", self.tokens);
        let line = |out: &mut String, cells: &[String]| {
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                let pad = w.saturating_sub(cell.chars().count());
                // Text columns left-aligned, numbers right-aligned.
                if i < 3 {
                    let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
                } else {
                    let _ = write!(out, "{}{cell}  ", " ".repeat(pad));
                }
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('\n');
        };
        line(&mut out, &header.map(str::to_owned));
        line(&mut out, &widths.map(|w| "-".repeat(w)));
        for row in &rows {
            line(&mut out, row);
        }
        if let Some(b) = self.bytes_per_token {
            let _ = writeln!(out, "tokendb bytes/token: {b:.1}");
        }
        if let Some(ms) = self.open_ms {
            let _ = writeln!(out, "tokendb open: {ms:.1} ms");
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

/// One goal of the tokendb issues, checked on the rows of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// What is compared, e.g. `validate x1 / redb get x1`.
    pub what: String,
    /// The measured ratio (or absolute figure for the sweep rate).
    pub value: f64,
    /// The goal: `value` must be at least this.
    pub target: f64,
}

impl Goal {
    /// Whether the goal is met.
    pub fn met(&self) -> bool {
        self.value >= self.target
    }

    /// `what = value (goal >= target): met|MISSED by x%`.
    pub fn describe(&self) -> String {
        let verdict = if self.met() {
            "met".to_owned()
        } else {
            format!(
                "MISSED by {:.0}%",
                100.0 * (1.0 - self.value / self.target.max(1e-9))
            )
        };
        if self.target >= 1_000.0 {
            format!(
                "goal: {} = {} (goal >= {}): {verdict}",
                self.what,
                group_thousands(self.value),
                group_thousands(self.target)
            )
        } else {
            format!(
                "goal: {} = {:.2}x (goal >= {}x): {verdict}",
                self.what, self.value, self.target
            )
        }
    }
}

impl Report {
    /// The median throughput of the first row matching, if any.
    fn rate(&self, system: &str, op: &str, mode: Option<&str>, threads: usize) -> Option<f64> {
        self.results
            .iter()
            .find(|r| {
                r.system == system
                    && r.op == op
                    && r.threads == threads
                    && mode.is_none_or(|m| r.mode.as_deref() == Some(m))
            })
            .map(|r| r.ops_per_sec)
    }

    /// The best throughput of `system`'s `op` over all its rows, and that row's thread count.
    fn best(&self, system: &str, op: &str) -> Option<(f64, usize)> {
        self.results
            .iter()
            .filter(|r| r.system == system && r.op == op)
            .map(|r| (r.ops_per_sec, r.threads))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// The goals of the tokendb issues (benchmarks, durable writes, sweeper) that this run has
    /// the rows to check, each a ratio of two figures of this run.
    pub fn goals(&self) -> Vec<Goal> {
        const TDB: &str = "tokendb";
        let validate = |t| self.rate(TDB, "validate", Some("access token"), t);
        let mut goals = Vec::new();
        let ratio = |what: String, a: Option<f64>, b: Option<f64>, target: f64| {
            Some(Goal {
                what,
                value: a? / b?.max(1e-9),
                target,
            })
        };
        for t in [1, 2] {
            goals.extend(ratio(
                format!("validate x{t} / redb get x{t}"),
                validate(t),
                self.rate("redb", "get", None, t),
                0.8,
            ));
        }
        for t in [1, 2] {
            goals.extend(ratio(
                format!("introspect x{t} / redb get x{t}"),
                self.rate(TDB, "introspect", Some("access token"), t),
                self.rate("redb", "get", None, t),
                0.55,
            ));
        }
        for t in [1, 2] {
            goals.extend(ratio(
                format!(
                    "validate x{t} with tokendb's default config / with the run's fixed cache \
                     (1 GiB unless --tokendb-cache-mb)"
                ),
                self.rate(TDB, "validate", Some(crate::systems::DEFAULT_CONFIG), t),
                validate(t),
                0.9,
            ));
        }
        goals.extend(ratio(
            "load: tokendb issue_access_batch tokens/s / raw redb insert keys/s (>= 0.5: at most \
             2x the time)"
                .to_owned(),
            self.rate(TDB, "load", None, crate::engine::LOAD_THREADS),
            self.rate("redb", "load", None, 1),
            0.5,
        ));
        for (c, issue, rotate) in [(1, 1.0, 1.5), (8, 1.5, 2.0)] {
            for (op, target) in [("issue", issue), ("rotate", rotate)] {
                goals.extend(ratio(
                    format!("{op} group x{c} / postgres {op} x{c}"),
                    self.rate(TDB, op, Some("group"), c),
                    self.rate("postgres", op, None, c),
                    target,
                ));
            }
        }
        if let Some((best, clients)) = self.best("postgres", "issue") {
            goals.extend(ratio(
                format!("issue group x64 / postgres issue at its best ({clients} clients)"),
                self.rate(TDB, "issue", Some("group"), 64),
                Some(best),
                2.0,
            ));
        }
        if let Some((best, conns)) = self.best("redis", "get") {
            goals.extend(ratio(
                format!("validate x2 / redis get at its best ({conns} conns)"),
                validate(2),
                Some(best),
                5.0,
            ));
        }
        for (t, target) in [(1, 1.5), (2, 2.5)] {
            goals.extend(ratio(
                format!("validate x{t} / sqlite get x{t}"),
                validate(t),
                self.rate("sqlite", "get", None, t),
                target,
            ));
        }
        let rotate64 = self.rate(TDB, "rotate", Some("group"), 64);
        if let Some((best, clients)) = self.best("postgres", "rotate") {
            goals.extend(ratio(
                format!("rotate group x64 / postgres rotate at its best ({clients} clients)"),
                rotate64,
                Some(best),
                8.0,
            ));
        }
        goals.extend(ratio(
            "refresh group x64 (one write) / rotate_then_issue group x64 (two calls)".to_owned(),
            self.rate(TDB, "refresh", Some("group"), 64),
            self.rate(TDB, "rotate_then_issue", Some("group"), 64),
            1.5,
        ));
        goals.extend(ratio(
            "refresh async x2000 (2 tokio workers) / refresh group x64 (64 threads)".to_owned(),
            self.rate(TDB, "refresh", Some("async tokio 2 workers"), 2_000),
            self.rate(TDB, "refresh", Some("group"), 64),
            0.9,
        ));
        goals.extend(ratio(
            "rotate group x64 / rotate per_op x64".to_owned(),
            rotate64,
            self.rate(TDB, "rotate", Some("per_op"), 64),
            10.0,
        ));
        if let Some(rate) = self.rate(TDB, "sweep", None, 1) {
            goals.push(Goal {
                what: "sweep, expired tokens deleted per second".to_owned(),
                value: rate,
                target: 200_000.0,
            });
        }
        for t in [1, 2] {
            goals.extend(ratio(
                format!("validate_during_sweep x{t} / validate x{t} (same loop)"),
                self.rate(TDB, "validate_during_sweep", None, t),
                self.rate(
                    TDB,
                    "validate",
                    Some("baseline of validate_during_sweep"),
                    t,
                ),
                0.7,
            ));
        }
        let pg = crate::pg::TOKENDB_PG;
        let plain = crate::pg::PLAIN;
        goals.extend(ratio(
            format!("{pg} rotate x64 / {plain} rotate x64"),
            self.rate(pg, "rotate", None, 64),
            self.rate(plain, "rotate", None, 64),
            1.5,
        ));
        for t in [1, 2, 16] {
            goals.extend(ratio(
                format!("{pg} validate x{t} / {plain} validate x{t}"),
                self.rate(pg, "validate", None, t),
                self.rate(plain, "validate", None, t),
                0.9,
            ));
        }
        let figure = |name: String| {
            self.figures
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
        };
        goals.extend(ratio(
            format!("{pg} bytes per family after 1 rotation / after 1000 (1 = no growth)"),
            figure(format!("{pg} bytes per family after 1 rotation(s)")),
            figure(format!("{pg} bytes per family after 1000 rotation(s)")),
            1.0,
        ));
        goals
    }
}

/// A JSON object with its keys in the given order.
fn ordered_object(fields: &[(&str, Value)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Rounds to `digits` decimal places, so that the JSON does not carry noise digits.
fn round_to(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// `1234567.8` as `1,234,568`.
fn group_thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("test machine (shared machine)".into(), 2000);
        r.push(ResultRow {
            system: "redb".into(),
            op: "get".into(),
            mode: None,
            threads: 1,
            ops_per_sec: 1_234_567.891,
            p50_us: 0.5004,
            p99_us: 2.0,
        });
        r.push(ResultRow {
            mode: Some("per-op".into()),
            op: "issue".into(),
            ..r.results[0].clone()
        });
        r.note("hello");
        r
    }

    #[test]
    fn json_shape() {
        let v = sample().to_json();
        assert_eq!(v["tokens"], 2000);
        assert_eq!(v["machine"], "test machine (shared machine)");
        assert!(v["bytes_per_token"].is_null() && v["open_ms"].is_null());
        let rows = v["results"].as_array().unwrap();
        assert!(rows[0].get("mode").is_none());
        assert_eq!(rows[1]["mode"], "per-op");
        assert_eq!(rows[0]["ops_per_sec"], 1_234_567.9);
        assert_eq!(rows[0]["p50_us"], 0.5);
        assert_eq!(rows[0]["threads"], 1);
    }

    #[test]
    fn json_string_keeps_the_documented_order() {
        let text = sample().to_json_string();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, sample().to_json());
        let pos = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
        assert!(pos("machine") < pos("tokens") && pos("tokens") < pos("results"));
        assert!(pos("results") < pos("bytes_per_token") && pos("open_ms") < pos("notes"));
        assert!(pos("system") < pos("op") && pos("threads") < pos("ops_per_sec"));
    }

    #[test]
    fn table_lists_rows_and_notes() {
        let t = sample().table();
        assert!(t.contains("1,234,568"), "{t}");
        assert!(t.contains("note: hello"), "{t}");
        assert_eq!(group_thousands(999.0), "999");
        assert_eq!(group_thousands(1000.0), "1,000");
    }
}
