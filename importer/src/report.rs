//! The import report: what was read, imported and rejected (by reason, with ids), the
//! anomalies (by kind, with ids), the events written and the time taken; as text for a
//! person and as JSON for `--report FILE`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One collection's figures in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionReport {
    /// The collection.
    pub collection: String,
    /// Documents left to read when its pass started (after the checkpoint).
    pub documents_at_start: u64,
    /// Documents left to read counted again when its pass ended.
    pub documents_at_end: u64,
    /// Documents read in this run.
    pub read: u64,
    /// Documents imported in this run.
    pub imported: u64,
    /// Documents rejected in this run.
    pub rejected: u64,
    /// Events written in this run.
    pub events_written: u64,
}

/// A document named in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// Its collection.
    pub collection: String,
    /// Its `_id`.
    pub object_id: String,
    /// The particulars.
    pub detail: String,
}

/// A run's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `payments` or `disputes`.
    pub domain: String,
    /// `import`, `dry_run` or `retry_rejects`.
    pub mode: String,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds taken.
    pub seconds: f64,
    /// Per collection, in the order read.
    pub collections: Vec<CollectionReport>,
    /// Rejected documents by reason code.
    pub rejected: BTreeMap<String, Vec<Listed>>,
    /// Anomalies by kind.
    pub anomalies: BTreeMap<String, Vec<Listed>>,
    /// Events written in all.
    pub events_written: u64,
    /// Loud warnings (legacy writers still running, ...).
    pub warnings: Vec<String>,
    /// Whether nothing was written (a dry run).
    pub dry_run: bool,
}

impl Report {
    /// Lists a rejected document.
    pub fn reject(&mut self, code: &str, collection: &str, object_id: &str, detail: &str) {
        self.rejected
            .entry(code.to_owned())
            .or_default()
            .push(Listed {
                collection: collection.to_owned(),
                object_id: object_id.to_owned(),
                detail: detail.to_owned(),
            });
    }

    /// Lists an anomaly.
    pub fn anomaly(&mut self, kind: &str, collection: &str, object_id: &str, detail: &str) {
        self.anomalies
            .entry(kind.to_owned())
            .or_default()
            .push(Listed {
                collection: collection.to_owned(),
                object_id: object_id.to_owned(),
                detail: detail.to_owned(),
            });
    }

    /// The report as text: figures, then reasons and kinds with up to 20 ids each.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "import {} ({}){}: {:.1} s, {} events written",
            self.domain,
            self.mode,
            if self.dry_run {
                ", DRY RUN: nothing written"
            } else {
                ""
            },
            self.seconds,
            self.events_written
        );
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>10} {:>10}",
            "collection", "read", "imported", "rejected", "events"
        );
        for c in &self.collections {
            let _ = writeln!(
                out,
                "{:<20} {:>10} {:>10} {:>10} {:>10}",
                c.collection, c.read, c.imported, c.rejected, c.events_written
            );
        }
        section(&mut out, "rejected, by reason", &self.rejected);
        section(&mut out, "anomalies, by kind", &self.anomalies);
        for w in &self.warnings {
            let _ = writeln!(out, "WARNING: {w}");
        }
        out
    }
}

fn section(out: &mut String, title: &str, map: &BTreeMap<String, Vec<Listed>>) {
    if map.is_empty() {
        let _ = writeln!(out, "{title}: none");
        return;
    }
    let _ = writeln!(out, "{title}:");
    for (key, items) in map {
        let _ = writeln!(out, "  {key}: {}", items.len());
        for item in items.iter().take(20) {
            let _ = writeln!(
                out,
                "    {} {}  {}",
                item.collection, item.object_id, item.detail
            );
        }
        if items.len() > 20 {
            let _ = writeln!(
                out,
                "    ... {} more (JSON report, legacy_import tables)",
                items.len() - 20
            );
        }
    }
}
