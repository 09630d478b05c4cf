//! `import verify <domain>`: the parity check finance runs after cutover, computed on the
//! client with the importer's own parser (never a MongoDB `$sum` over doubles). Per
//! collection, documents = imported + rejected; per payment, the money of its entries by
//! type against the ledger's postings, its terms against its import; per (provider,
//! currency, UTC day of `createdAt`), count and amount against the projections'
//! reconciliation buckets, and each payment's mapped status against its projected one (so
//! verify waits for the payments projector and fails when it has not caught up). Every
//! imported payment, entry and dispute is compared by the digest of its document: one
//! changed after its import is named and never explained, nor are its payment's
//! differences. Otherwise a difference is explained when the import listed that id: a
//! reject or an anomaly of the payment, or of one of its entries (of the type that
//! differs, for money). Memory grows with the number of payments and entries (one small
//! record each).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledger::dispute::{Dispute, DisputeEvent};
use ledger::payment::{EntryKind, PaymentImported};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::ids::Collection;
use crate::mongo::Legacy;
use crate::run::{Domain, ImportError};
use crate::translate::{parse_dispute, parse_entry, payment};

/// One difference between MongoDB and the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// Which check (`count`, `bucket`, `payment_money`, `payment_terms`, `status`, ...).
    pub check: String,
    /// What differs: the bucket, the payment, the collection.
    pub key: String,
    /// MongoDB's side.
    pub mongo: String,
    /// The ledger's side.
    pub ledger: String,
    /// The legacy ids concerned.
    pub ids: Vec<String>,
    /// The listing that explains it, if any.
    pub explained_by: Option<String>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyOutcome {
    /// The domain checked.
    pub domain: String,
    /// Per collection: (documents in MongoDB, imported, open rejects).
    pub counts: BTreeMap<String, (u64, u64, u64)>,
    /// Every difference.
    pub differences: Vec<Difference>,
    /// Where the ledger's side came from, and alike.
    pub notes: Vec<String>,
}

impl VerifyOutcome {
    /// The differences no listing explains.
    pub fn unexplained(&self) -> usize {
        self.differences
            .iter()
            .filter(|d| d.explained_by.is_none())
            .count()
    }

    /// A table for a person.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "import verify {}", self.domain);
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>10}",
            "collection", "mongo", "imported", "rejected"
        );
        for (c, (m, i, r)) in &self.counts {
            let _ = writeln!(out, "{c:<20} {m:>10} {i:>10} {r:>10}");
        }
        if self.differences.is_empty() {
            let _ = writeln!(out, "no differences: MongoDB and the ledger agree");
            return out;
        }
        let _ = writeln!(
            out,
            "{} difference(s), {} unexplained:",
            self.differences.len(),
            self.unexplained()
        );
        let _ = writeln!(
            out,
            "{:<14} | {:<48} | {:<24} | {:<24} | explained by",
            "check", "key", "mongo", "ledger"
        );
        for d in &self.differences {
            let _ = writeln!(
                out,
                "{:<14} | {:<48} | {:<24} | {:<24} | {}",
                d.check,
                d.key,
                d.mongo,
                d.ledger,
                d.explained_by.as_deref().unwrap_or("UNEXPLAINED")
            );
        }
        out
    }
}

#[derive(Debug, Clone)]
struct MongoPayment {
    hex: String,
    provider: String,
    asset: String,
    day: String,
    amount: Decimal,
    status: String,
    digest: String,
}

type Listed = HashMap<(String, String), String>;

async fn listed(pool: &PgPool) -> Result<Listed, sqlx::Error> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT collection, object_id, 'reject ' || code FROM legacy_import.rejects WHERE resolved_at IS NULL \
         UNION ALL SELECT collection, object_id, 'anomaly ' || kind FROM legacy_import.anomalies",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Listed::new();
    for (c, o, why) in rows {
        out.entry((c, o))
            .and_modify(|w| {
                w.push_str(", ");
                w.push_str(&why);
            })
            .or_insert(why);
    }
    Ok(out)
}

async fn counts(pool: &PgPool, collection: &str) -> Result<(u64, u64), sqlx::Error> {
    let (imported, rejected): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM legacy_import.id_map WHERE collection = $1), \
                (SELECT count(*) FROM legacy_import.rejects WHERE collection = $1 AND resolved_at IS NULL)",
    )
    .bind(collection)
    .fetch_one(pool)
    .await?;
    Ok((
        u64::try_from(imported).unwrap_or(0),
        u64::try_from(rejected).unwrap_or(0),
    ))
}

/// Runs the parity check of a domain, waiting up to `wait` for the payments projector to
/// catch up (its statuses and buckets are compared).
///
/// # Errors
/// MongoDB or PostgreSQL failed.
pub async fn verify(
    pool: &PgPool,
    domain: Domain,
    uri: &str,
    db: &str,
    wait: Duration,
) -> Result<VerifyOutcome, ImportError> {
    let legacy = Legacy::connect(uri, db).await?;
    let listed = listed(pool).await?;
    let mut outcome = VerifyOutcome {
        domain: domain.name().into(),
        ..VerifyOutcome::default()
    };
    for &c in domain.collections() {
        let docs = legacy.count(c.name(), None).await?;
        let (imported, rejected) = counts(pool, c.name()).await?;
        outcome
            .counts
            .insert(c.name().into(), (docs, imported, rejected));
        if docs != imported + rejected {
            outcome.differences.push(Difference {
                check: "count".into(),
                key: c.name().into(),
                mongo: format!("{docs} documents"),
                ledger: format!("{imported} imported + {rejected} rejected"),
                ids: Vec::new(),
                explained_by: None,
            });
        }
    }
    match domain {
        Domain::Payments => verify_payments(pool, &legacy, &listed, wait, &mut outcome).await?,
        Domain::Disputes => verify_disputes(pool, &legacy, &listed, &mut outcome).await?,
    }
    Ok(outcome)
}

fn explain<'a>(
    listed: &Listed,
    collection: &str,
    ids: impl IntoIterator<Item = &'a String>,
) -> Option<String> {
    ids.into_iter().find_map(|id| {
        listed
            .get(&(collection.to_owned(), id.clone()))
            .map(|w| format!("{collection} {id}: {w}"))
    })
}

#[allow(clippy::too_many_lines)]
async fn verify_payments(
    pool: &PgPool,
    legacy: &Legacy,
    listed: &Listed,
    wait: Duration,
    outcome: &mut VerifyOutcome,
) -> Result<(), ImportError> {
    // MongoDB's side, through the importer's own parser.
    let mut mongo: HashMap<Uuid, MongoPayment> = HashMap::new();
    let mut rx = legacy.batches(Collection::Payments.name(), None, 1000);
    while let Some(batch) = rx.recv().await {
        for raw in batch? {
            if let Ok((p, source)) = payment(&raw) {
                mongo.insert(
                    p.terms.payment_id,
                    MongoPayment {
                        hex: source.object_id,
                        provider: p.terms.provider.clone(),
                        asset: p.terms.asset.code().into(),
                        day: p.created_at.date_naive().to_string(),
                        amount: p.terms.amount,
                        status: p.mapped_status.as_str().into(),
                        digest: source.digest,
                    },
                );
            }
        }
    }
    let mut money_mongo: HashMap<(Uuid, EntryKind), Decimal> = HashMap::new();
    let mut entries_of: HashMap<Uuid, Vec<(String, EntryKind)>> = HashMap::new();
    let mut entry_digests: HashMap<String, (String, Option<Uuid>)> = HashMap::new();
    let mut rx = legacy.batches(Collection::FundsLedgerEntries.name(), None, 1000);
    while let Some(batch) = rx.recv().await {
        for raw in batch? {
            if let Ok(e) = parse_entry(&raw) {
                let pid = e
                    .payment_hex
                    .as_deref()
                    .map(|h| Collection::Payments.uuid_of(h));
                if let Some(pid) = pid {
                    *money_mongo.entry((pid, e.kind)).or_default() += e.amount;
                    entries_of
                        .entry(pid)
                        .or_default()
                        .push((e.source.object_id.clone(), e.kind));
                }
                entry_digests.insert(e.source.object_id, (e.source.digest, pid));
            }
        }
    }

    // The ledger's side.
    let imported: Vec<(Uuid, Json<Value>, String, String)> = sqlx::query_as(
        "SELECT e.stream_id, e.payload, m.object_id, m.digest FROM events e \
         JOIN legacy_import.id_map m ON m.collection = 'payments' AND m.id = e.stream_id \
         WHERE e.event_type = 'PaymentImported'",
    )
    .fetch_all(pool)
    .await?;
    let mut ledger: HashMap<Uuid, (PaymentImported, String, String)> = HashMap::new();
    for (id, Json(payload), hex, digest) in imported {
        if let Ok(p) = serde_json::from_value::<PaymentImported>(payload) {
            ledger.insert(id, (p, hex, digest));
        }
    }
    let money_rows: Vec<(Uuid, String, Decimal)> = sqlx::query_as(
        "SELECT (e.payload ->> 'payment_id')::uuid, e.payload ->> 'kind', sum(p.amount) \
         FROM events e JOIN postings p ON p.position = e.position AND p.amount > 0 \
         WHERE e.event_type = 'LedgerEntryImported' AND e.payload ->> 'payment_id' IS NOT NULL \
         GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let mut money_ledger: HashMap<(Uuid, EntryKind), Decimal> = HashMap::new();
    for (pid, kind, sum) in money_rows {
        if let Some(k) = EntryKind::from_legacy(&kind) {
            money_ledger.insert((pid, k), sum);
        }
    }

    // A difference is explained by a listing of the payment, or of one of its entries
    // (of the kind that differs, for money); never once a document of it changed.
    let explain_payment = |pid: &Uuid, hex: &str, kind: Option<EntryKind>| -> Option<String> {
        let by_payment = explain(listed, "payments", [&hex.to_owned()]);
        by_payment.or_else(|| {
            let ids: Vec<String> = entries_of
                .get(pid)
                .into_iter()
                .flatten()
                .filter(|(_, k)| kind.is_none_or(|want| *k == want))
                .map(|(h, _)| h.clone())
                .collect();
            explain(listed, "fundsledgerentries", ids.iter())
        })
    };

    // Entries changed in MongoDB since their import (or gone from it): never explained,
    // and their payment's differences are not either.
    let mut changed: HashSet<Uuid> = HashSet::new();
    let stored: Vec<(String, String, Uuid, String)> = sqlx::query_as(
        "SELECT object_id, digest, stream_id, stream_type FROM legacy_import.id_map \
         WHERE collection = 'fundsledgerentries' ORDER BY object_id",
    )
    .fetch_all(pool)
    .await?;
    for (hex, digest, stream_id, stream_type) in stored {
        let payment = (stream_type == ledger::payment::STREAM_TYPE).then_some(stream_id);
        let now = entry_digests.get(&hex);
        let (mongo_side, pid) = match now {
            Some((d, _)) if *d == digest => continue,
            Some((d, pid)) => (format!("digest {}", &d[..12.min(d.len())]), pid.or(payment)),
            None => ("absent or invalid now".to_owned(), payment),
        };
        if let Some(pid) = pid {
            changed.insert(pid);
        }
        outcome.differences.push(Difference {
            check: "changed".into(),
            key: format!(
                "entry {hex}{}",
                pid.map(|p| format!(" of payment {p}")).unwrap_or_default()
            ),
            mongo: mongo_side,
            ledger: format!("digest {}", &digest[..12.min(digest.len())]),
            ids: vec![hex.clone()],
            explained_by: None,
        });
    }

    // Per payment: presence, terms, digest, money by type.
    let mut all: Vec<Uuid> = mongo.keys().chain(ledger.keys()).copied().collect();
    all.sort();
    all.dedup();
    for pid in &all {
        let hex = mongo
            .get(pid)
            .map(|m| m.hex.clone())
            .or_else(|| ledger.get(pid).map(|l| l.1.clone()))
            .unwrap_or_default();
        let key = format!("payment {hex} ({pid})");
        match (mongo.get(pid), ledger.get(pid)) {
            (Some(_), None) => outcome.differences.push(Difference {
                check: "payment".into(),
                key: key.clone(),
                mongo: "valid".into(),
                ledger: "not imported".into(),
                ids: vec![hex.clone()],
                explained_by: explain_payment(pid, &hex, None),
            }),
            (None, Some(_)) => outcome.differences.push(Difference {
                check: "payment".into(),
                key: key.clone(),
                mongo: "absent or invalid now".into(),
                ledger: "imported".into(),
                ids: vec![hex.clone()],
                explained_by: None,
            }),
            (Some(m), Some((l, _, digest))) => {
                if &m.digest != digest {
                    changed.insert(*pid);
                    outcome.differences.push(Difference {
                        check: "changed".into(),
                        key: key.clone(),
                        mongo: format!("digest {}", &m.digest[..12]),
                        ledger: format!("digest {}", &digest[..12.min(digest.len())]),
                        ids: vec![hex.clone()],
                        explained_by: None,
                    });
                }
                let lt = &l.terms;
                if m.amount != lt.amount || m.asset != lt.asset.code() || m.provider != lt.provider
                {
                    outcome.differences.push(Difference {
                        check: "payment_terms".into(),
                        key: key.clone(),
                        mongo: format!("{} {} {}", m.amount, m.asset, m.provider),
                        ledger: format!("{} {} {}", lt.amount, lt.asset, lt.provider),
                        ids: vec![hex.clone()],
                        explained_by: if changed.contains(pid) {
                            None
                        } else {
                            explain_payment(pid, &hex, None)
                        },
                    });
                }
            }
            (None, None) => {}
        }
        for kind in EntryKind::ALL {
            let a = money_mongo.get(&(*pid, kind)).copied().unwrap_or_default();
            let b = money_ledger.get(&(*pid, kind)).copied().unwrap_or_default();
            if a != b {
                outcome.differences.push(Difference {
                    check: "payment_money".into(),
                    key: format!("{key} {}", kind.as_str()),
                    mongo: a.normalize().to_string(),
                    ledger: b.normalize().to_string(),
                    ids: vec![hex.clone()],
                    explained_by: if changed.contains(pid) {
                        None
                    } else {
                        explain_payment(pid, &hex, Some(kind))
                    },
                });
            }
        }
    }
    // Entries whose payment is not a payment (orphans) are checked by count only.

    // Status and buckets are read from the projections, so they must have caught up.
    if let Err(behind) = payments_projected(pool, wait).await? {
        outcome.differences.push(Difference {
            check: "projections".into(),
            key: "payments projector".into(),
            mongo: "-".into(),
            ledger: format!("{behind} events not projected after {wait:?}"),
            ids: Vec::new(),
            explained_by: None,
        });
        outcome.notes.push(
            "statuses and buckets not compared: the payments projector has not caught up \
             (run `escrow-ledger project` or `serve`, then verify again)"
                .into(),
        );
        return Ok(());
    }

    // Status: the mapped legacy status (MongoDB now) against the projected one.
    let ids: Vec<Uuid> = ledger.keys().copied().collect();
    for chunk in ids.chunks(1000) {
        let projected: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
            "SELECT payment_id, status FROM finance.payments WHERE payment_id = ANY($1)",
        )
        .bind(chunk)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
        for pid in chunk {
            let Some(m) = mongo.get(pid) else { continue };
            let status = projected.get(pid).map_or("not projected", String::as_str);
            if m.status != status {
                outcome.differences.push(Difference {
                    check: "status".into(),
                    key: format!("payment {} ({pid})", m.hex),
                    mongo: m.status.clone(),
                    ledger: status.into(),
                    ids: vec![m.hex.clone()],
                    explained_by: if changed.contains(pid) {
                        None
                    } else {
                        explain_payment(pid, &m.hex, None)
                    },
                });
            }
        }
    }

    // Buckets: (provider, currency, UTC day) count and amount.
    let mut buckets_mongo: BTreeMap<BucketKey, (i64, Decimal, Vec<Uuid>)> = BTreeMap::new();
    for (pid, m) in &mongo {
        let b = buckets_mongo
            .entry((m.provider.clone(), m.asset.clone(), m.day.clone()))
            .or_default();
        b.0 += 1;
        b.1 += m.amount;
        b.2.push(*pid);
    }
    let buckets_ledger = ledger_buckets(pool).await?;
    outcome.notes.push(
        "ledger buckets from finance.reconciliation_buckets, statuses from finance.payments".into(),
    );
    let mut keys: Vec<_> = buckets_mongo
        .keys()
        .chain(buckets_ledger.keys())
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (mc, ma, mids) = buckets_mongo.get(&key).cloned().unwrap_or_default();
        let (lc, la) = buckets_ledger.get(&key).copied().unwrap_or_default();
        if mc == lc && ma == la {
            continue;
        }
        // The payments of this bucket that differ one by one.
        let mut culprits: Vec<Uuid> = mids
            .iter()
            .filter(|pid| match (mongo.get(pid), ledger.get(pid)) {
                (Some(m), Some((l, _, _))) => {
                    m.amount != l.terms.amount
                        || l.created_at.date_naive().to_string() != m.day
                        || changed.contains(pid)
                }
                _ => true,
            })
            .copied()
            .collect();
        for (pid, (l, _, _)) in &ledger {
            let in_key = (
                l.terms.provider.clone(),
                l.terms.asset.code().to_owned(),
                l.created_at.date_naive().to_string(),
            );
            if in_key == key
                && mongo
                    .get(pid)
                    .is_none_or(|m| (m.provider.clone(), m.asset.clone(), m.day.clone()) != key)
            {
                culprits.push(*pid);
            }
        }
        culprits.sort();
        culprits.dedup();
        let hexes: Vec<String> = culprits
            .iter()
            .map(|p| {
                mongo
                    .get(p)
                    .map(|m| m.hex.clone())
                    .or_else(|| ledger.get(p).map(|l| l.1.clone()))
                    .unwrap_or_default()
            })
            .collect();
        let explained = if culprits.is_empty() || culprits.iter().any(|p| changed.contains(p)) {
            None
        } else {
            culprits
                .iter()
                .zip(&hexes)
                .map(|(p, h)| explain_payment(p, h, None))
                .collect::<Option<Vec<_>>>()
                .map(|w| w.join("; "))
        };
        outcome.differences.push(Difference {
            check: "bucket".into(),
            key: format!(
                "({}, {}, {}) payments {}",
                key.0,
                key.1,
                key.2,
                if hexes.is_empty() {
                    "-".to_owned()
                } else {
                    hexes.join(",")
                }
            ),
            mongo: format!("{mc} / {}", ma.normalize()),
            ledger: format!("{lc} / {}", la.normalize()),
            ids: hexes,
            explained_by: explained,
        });
    }
    Ok(())
}

/// (provider, currency, UTC day).
type BucketKey = (String, String, String);

type Buckets = BTreeMap<BucketKey, (i64, Decimal)>;

type BucketRow = (String, String, chrono::NaiveDate, i64, Decimal);

/// Waits (up to `wait`) until the payments projector has applied every
/// committed event; `Err(events behind)` when it has not by then (or is not there).
async fn payments_projected(pool: &PgPool, wait: Duration) -> Result<Result<(), i64>, sqlx::Error> {
    let deadline = Instant::now() + wait;
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN s.projector IS NULL THEN (SELECT count(*) FROM events) \
                    ELSE (SELECT count(*) FROM events e \
                          WHERE (e.tx_id::text::int8, e.position) > (s.checkpoint_tx, s.checkpoint_position)) END \
             FROM (SELECT 1) AS one \
             LEFT JOIN projection.projector_state s ON s.projector = 'payments'",
        )
        .fetch_one(pool)
        .await?;
        if behind == 0 {
            return Ok(Ok(()));
        }
        if Instant::now() >= deadline {
            return Ok(Err(behind));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The ledger's buckets, from the projection (`finance.reconciliation_buckets`).
async fn ledger_buckets(pool: &PgPool) -> Result<Buckets, sqlx::Error> {
    let rows: Vec<BucketRow> = sqlx::query_as(
        "SELECT provider, asset, day, sum(payments)::int8, sum(amount) \
         FROM finance.reconciliation_buckets GROUP BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(p, a, d, c, s)| ((p, a, d.to_string()), (c, s)))
        .collect())
}

async fn verify_disputes(
    pool: &PgPool,
    legacy: &Legacy,
    listed: &Listed,
    outcome: &mut VerifyOutcome,
) -> Result<(), ImportError> {
    let rows: Vec<(String, String, Uuid)> = sqlx::query_as(
        "SELECT object_id, digest, id FROM legacy_import.id_map WHERE collection = 'disputes'",
    )
    .fetch_all(pool)
    .await?;
    let map: HashMap<String, (String, Uuid)> =
        rows.into_iter().map(|(o, d, i)| (o, (d, i))).collect();
    let mut rx = legacy.batches(Collection::Disputes.name(), None, 500);
    while let Some(batch) = rx.recv().await {
        for raw in batch? {
            let Ok(p) = parse_dispute(&raw) else { continue };
            let hex = p.source.object_id.clone();
            let Some((digest, id)) = map.get(&hex) else {
                if !listed.contains_key(&("disputes".to_owned(), hex.clone())) {
                    outcome.differences.push(Difference {
                        check: "dispute".into(),
                        key: format!("dispute {hex}"),
                        mongo: "valid".into(),
                        ledger: "not imported".into(),
                        ids: vec![hex.clone()],
                        explained_by: None,
                    });
                }
                continue;
            };
            let events: Vec<(String, i32, Json<Value>, DateTime<Utc>)> = sqlx::query_as(
                "SELECT event_type, schema_version, payload, occurred_at FROM events \
                 WHERE stream_id = $1 ORDER BY version",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            let mut d = Dispute::default();
            for (t, v, Json(payload), at) in events {
                if let Ok(e) = DisputeEvent::decode(&t, v, &payload) {
                    d.apply(&e, at);
                }
            }
            let changed = digest != &p.source.digest;
            if changed {
                outcome.differences.push(Difference {
                    check: "changed".into(),
                    key: format!("dispute {hex}"),
                    mongo: "document changed".into(),
                    ledger: "as imported".into(),
                    ids: vec![hex.clone()],
                    explained_by: None,
                });
            }
            if d.status != p.imported.status && !changed {
                outcome.differences.push(Difference {
                    check: "status".into(),
                    key: format!("dispute {hex}"),
                    mongo: p.imported.status.as_str().into(),
                    ledger: d.status.as_str().into(),
                    ids: vec![hex.clone()],
                    explained_by: explain(listed, "disputes", [&hex]),
                });
            }
        }
    }
    Ok(())
}
