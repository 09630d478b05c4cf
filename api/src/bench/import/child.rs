//! One `escrow-ledger import <domain>` run as a child process of the benchmark, so that
//! its memory is the real binary's alone: the peak resident set is the kernel's own
//! high-water mark, `getrusage(RUSAGE_CHILDREN).ru_maxrss` once the child is reaped
//! (exact), with `/proc/<pid>/status` `VmHWM` polled meanwhile as a cross-check.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use importer::Report;
use nix::sys::resource::{getrusage, UsageWho};

/// What one import process did.
#[derive(Debug, Clone)]
pub struct ChildRun {
    /// Its report (`--report FILE`).
    pub report: Report,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
    /// The highest `VmHWM` seen while polling, in KiB.
    pub polled_hwm_kib: u64,
}

/// Where the import runs: the binary, the databases and the batch size.
#[derive(Debug, Clone)]
pub struct Target {
    /// The PostgreSQL URL for the child's `DATABASE_URL`.
    pub database_url: String,
    /// The legacy MongoDB.
    pub mongo_uri: String,
    /// Its database.
    pub mongo_db: String,
    /// Documents per batch.
    pub batch_size: u32,
}

/// Runs `escrow-ledger import <domain>` (this very binary) to the end and reads its report.
///
/// # Errors
/// The child cannot start, fails, or writes no readable report.
pub async fn import(target: &Target, domain: &str) -> anyhow::Result<ChildRun> {
    // This very binary even if a build replaced the file meanwhile (a long run).
    let proc_exe = std::path::Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().context("the path of this binary")?
    };
    let report_path: PathBuf = std::env::temp_dir().join(format!(
        "escrow-ledger-bench-import-{domain}-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    let started = Instant::now();
    let mut child = tokio::process::Command::new(exe)
        .args(["import", domain, "--mongo-uri", &target.mongo_uri])
        .args(["--mongo-db", &target.mongo_db, "--no-progress-bar"])
        .args(["--batch-size", &target.batch_size.to_string()])
        .arg("--report")
        .arg(&report_path)
        .env("DATABASE_URL", &target.database_url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start `escrow-ledger import {domain}`"))?;
    let status_file = child.id().map(|pid| format!("/proc/{pid}/status"));
    let mut polled_hwm_kib = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = tick.tick() => {
                if let Some(kib) = status_file.as_deref().and_then(vm_hwm_kib) {
                    polled_hwm_kib = polled_hwm_kib.max(kib);
                }
            }
        }
    };
    let elapsed = started.elapsed();
    anyhow::ensure!(
        status.success(),
        "`escrow-ledger import {domain}` failed: {status}"
    );
    let bytes = std::fs::read(&report_path)
        .with_context(|| format!("read the report {}", report_path.display()))?;
    let _ = std::fs::remove_file(&report_path);
    let report: Report = serde_json::from_slice(&bytes).context("parse the import report")?;
    Ok(ChildRun {
        report,
        elapsed,
        polled_hwm_kib,
    })
}

/// The largest resident set of any child reaped so far, in KiB (Linux reports
/// `ru_maxrss` in KiB).
///
/// # Errors
/// `getrusage` failed.
pub fn children_peak_rss_kib() -> anyhow::Result<u64> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    Ok(u64::try_from(usage.max_rss()).unwrap_or(0))
}

fn vm_hwm_kib(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
