//! The import report: what was read, imported and rejected (by reason, with ids), the
//! anomalies (by kind, with ids), the events written and the time taken; as text for a
//! person and as JSON for `--report FILE`.
//!
//! A legacy database can hold millions of anomalies, so a run keeps only the first
//! [`SAMPLE`] ids of each reason and kind in memory (and in the text), with the counts;
//! the JSON file lists every id, written as they are read from the tables
//! ([`JsonLists`]), so memory stays flat whatever the number listed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

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
    /// Rejected documents by reason code: every one in the JSON file, the first
    /// [`SAMPLE`] of each reason in a run's returned report.
    pub rejected: BTreeMap<String, Vec<Listed>>,
    /// Anomalies by kind: every one in the JSON file, the first [`SAMPLE`] of each kind
    /// in a run's returned report.
    pub anomalies: BTreeMap<String, Vec<Listed>>,
    /// How many documents each reason code rejected (all of them, not only those listed).
    #[serde(default)]
    pub rejected_counts: BTreeMap<String, u64>,
    /// How many anomalies of each kind were found (all of them, not only those listed).
    #[serde(default)]
    pub anomaly_counts: BTreeMap<String, u64>,
    /// Events written in all.
    pub events_written: u64,
    /// Loud warnings (legacy writers still running, ...).
    pub warnings: Vec<String>,
    /// A collection's count moved during the run: legacy writers are still running, and
    /// the import must run again once they are stopped (the command exits 3).
    #[serde(default)]
    pub legacy_writers_running: bool,
    /// Whether nothing was written (a dry run).
    pub dry_run: bool,
}

/// How many ids of each reason or kind a run keeps in memory and prints.
pub const SAMPLE: usize = 20;

impl Report {
    /// The report as text: figures, then reasons and kinds with up to 20 ids each.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "import {} ({}){}: {:.1} s, {} events {}",
            self.domain,
            self.mode,
            if self.dry_run {
                ", DRY RUN: rolled back, nothing kept"
            } else {
                ""
            },
            self.seconds,
            self.events_written,
            if self.dry_run {
                "a real run would write"
            } else {
                "written"
            }
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
        section(
            &mut out,
            "rejected, by reason",
            &self.rejected_counts,
            &self.rejected,
        );
        section(
            &mut out,
            "anomalies, by kind",
            &self.anomaly_counts,
            &self.anomalies,
        );
        for w in &self.warnings {
            let _ = writeln!(out, "WARNING: {w}");
        }
        out
    }
}

fn section(
    out: &mut String,
    title: &str,
    counts: &BTreeMap<String, u64>,
    lists: &BTreeMap<String, Vec<Listed>>,
) {
    if counts.is_empty() {
        let _ = writeln!(out, "{title}: none");
        return;
    }
    let _ = writeln!(out, "{title}:");
    for (key, &count) in counts {
        let _ = writeln!(out, "  {key}: {count}");
        let items = lists.get(key).map_or(&[][..], Vec::as_slice);
        for item in items.iter().take(SAMPLE) {
            let _ = writeln!(
                out,
                "    {} {}  {}",
                item.collection, item.object_id, item.detail
            );
        }
        let shown = items.len().min(SAMPLE) as u64;
        if count > shown {
            let _ = writeln!(
                out,
                "    ... {} more (JSON report, legacy_import tables)",
                count - shown
            );
        }
    }
}

/// Writes a report as JSON with its two lists fed one item at a time: the report's own
/// (sampled) lists are left out, and the caller streams every rejected document and every
/// anomaly, grouped by reason and kind, from the tables.
///
/// Call [`JsonLists::start`], then [`JsonLists::begin`] for `rejected`, [`JsonLists::item`]
/// for each, [`JsonLists::end`], the same for `anomalies`, then [`JsonLists::finish`].
pub struct JsonLists<W: Write> {
    out: W,
    key: Option<String>,
    first_item: bool,
}

impl<W: Write> JsonLists<W> {
    /// Writes the report's figures (everything but the lists) and opens the object.
    ///
    /// # Errors
    /// Writing failed.
    pub fn start(mut out: W, report: &Report) -> io::Result<Self> {
        let mut figures = serde_json::to_value(report)?;
        if let Some(map) = figures.as_object_mut() {
            map.remove("rejected");
            map.remove("anomalies");
        }
        let text = serde_json::to_string_pretty(&figures)?;
        // Everything up to the closing brace; the lists follow as members of the object.
        let head = text
            .trim_end()
            .strip_suffix('}')
            .unwrap_or(&text)
            .trim_end();
        out.write_all(head.as_bytes())?;
        Ok(JsonLists {
            out,
            key: None,
            first_item: true,
        })
    }

    /// Opens the list named `name` (`rejected` or `anomalies`).
    ///
    /// # Errors
    /// Writing failed.
    pub fn begin(&mut self, name: &str) -> io::Result<()> {
        write!(self.out, ",\n  {}: {{", serde_json::to_string(name)?)?;
        self.key = None;
        Ok(())
    }

    /// Adds one item under its reason or kind; items must come grouped by `key`.
    ///
    /// # Errors
    /// Writing failed.
    pub fn item(&mut self, key: &str, item: &Listed) -> io::Result<()> {
        if self.key.as_deref() != Some(key) {
            let sep = if self.key.is_some() { "\n    ]," } else { "" };
            write!(self.out, "{sep}\n    {}: [", serde_json::to_string(key)?)?;
            self.key = Some(key.to_owned());
            self.first_item = true;
        }
        let sep = if self.first_item { "" } else { "," };
        write!(self.out, "{sep}\n      ")?;
        serde_json::to_writer(&mut self.out, item)?;
        self.first_item = false;
        Ok(())
    }

    /// Closes the list opened last.
    ///
    /// # Errors
    /// Writing failed.
    pub fn end(&mut self) -> io::Result<()> {
        if self.key.take().is_some() {
            self.out.write_all(b"\n    ]\n  }")?;
        } else {
            self.out.write_all(b"}")?;
        }
        Ok(())
    }

    /// Closes the object and flushes.
    ///
    /// # Errors
    /// Writing failed.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(b"\n}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str) -> Listed {
        Listed {
            collection: "payments".into(),
            object_id: id.into(),
            detail: "why \"quoted\"".into(),
        }
    }

    #[test]
    fn streamed_json_reads_back_as_the_whole_report() {
        let mut report = Report {
            domain: "payments".into(),
            mode: "import".into(),
            events_written: 7,
            warnings: vec!["w".into()],
            ..Report::default()
        };
        report.rejected_counts.insert("bad_money".into(), 3);
        report.anomaly_counts.insert("orphan".into(), 1);
        // The sampled lists in memory are not what the file lists.
        report
            .rejected
            .insert("bad_money".into(), vec![listed("sample")]);
        let mut w = JsonLists::start(Vec::new(), &report).unwrap();
        w.begin("rejected").unwrap();
        w.item("bad_money", &listed("a")).unwrap();
        w.item("bad_money", &listed("b")).unwrap();
        w.item("no_status", &listed("c")).unwrap();
        w.end().unwrap();
        w.begin("anomalies").unwrap();
        w.end().unwrap();
        let bytes = w.finish().unwrap();
        let back: Report = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.events_written, 7);
        assert_eq!(back.warnings, vec!["w".to_string()]);
        assert_eq!(back.rejected_counts["bad_money"], 3);
        let ids: Vec<_> = back.rejected["bad_money"]
            .iter()
            .map(|l| l.object_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(back.rejected["no_status"], vec![listed("c")]);
        assert!(back.anomalies.is_empty());
    }

    #[test]
    fn text_counts_every_one_but_lists_a_sample() {
        let mut report = Report::default();
        report.anomaly_counts.insert("orphan".into(), 25);
        report.anomalies.insert(
            "orphan".into(),
            (0..SAMPLE).map(|i| listed(&i.to_string())).collect(),
        );
        let text = report.to_text();
        assert!(text.contains("  orphan: 25\n"), "{text}");
        assert!(text.contains("... 5 more"), "{text}");
        assert!(text.contains("rejected, by reason: none"), "{text}");
    }
}
