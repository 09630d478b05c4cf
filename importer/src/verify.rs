//! `import verify <domain>`: the parity check finance runs after cutover, computed on the
//! client with the importer's own parser (never a MongoDB `$sum` over doubles). Per
//! collection, documents = imported + rejected; per payment, the money of its entries by
//! type against the ledger's postings, its terms and its status against its history; per
//! (provider, currency, UTC day of `createdAt`), count and amount against the projections'
//! reconciliation buckets (or the event store when the projector has not caught up). A
//! difference is explained when the import listed that id (a reject or an anomaly of the
//! payment or of one of its entries); a document changed after its import never is.
//! Memory grows with the number of payments (one small record each).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use ledger::dispute::{Dispute, DisputeEvent};
use ledger::payment::{EntryKind, PaymentImported};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::check::fold_payments;
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

/// Runs the parity check of a domain.
///
/// # Errors
/// MongoDB or PostgreSQL failed.
pub async fn verify(
    pool: &PgPool,
    domain: Domain,
    uri: &str,
    db: &str,
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
        Domain::Payments => verify_payments(pool, &legacy, &listed, &mut outcome).await?,
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
    let mut entries_of: HashMap<Uuid, Vec<String>> = HashMap::new();
    let mut rx = legacy.batches(Collection::FundsLedgerEntries.name(), None, 1000);
    while let Some(batch) = rx.recv().await {
        for raw in batch? {
            if let Ok(e) = parse_entry(&raw) {
                if let Some(h) = &e.payment_hex {
                    let pid = Collection::Payments.uuid_of(h);
                    *money_mongo.entry((pid, e.kind)).or_default() += e.amount;
                    entries_of
                        .entry(pid)
                        .or_default()
                        .push(e.source.object_id.clone());
                }
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

    let explain_payment = |pid: &Uuid, hex: &str| -> Option<String> {
        let mut ids = vec![hex.to_owned()];
        let by_payment = explain(listed, "payments", ids.iter());
        by_payment.or_else(|| {
            ids = entries_of.get(pid).cloned().unwrap_or_default();
            explain(listed, "fundsledgerentries", ids.iter())
        })
    };

    // Per payment: presence, terms, digest, money by type.
    let mut all: Vec<Uuid> = mongo.keys().chain(ledger.keys()).copied().collect();
    all.sort();
    all.dedup();
    let mut changed: HashSet<Uuid> = HashSet::new();
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
                explained_by: explain_payment(pid, &hex),
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
                            explain_payment(pid, &hex)
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
                    explained_by: explain_payment(pid, &hex),
                });
            }
        }
    }
    // Entries whose payment is not a payment (orphans) are checked by count only.

    // Status: the mapped legacy status (MongoDB now) against the payment's history.
    let ids: Vec<Uuid> = ledger.keys().copied().collect();
    for chunk in ids.chunks(1000) {
        let mut conn = pool.acquire().await?;
        let folded = fold_payments(&mut conn, chunk).await?;
        for pid in chunk {
            let (Some(m), Some(f)) = (mongo.get(pid), folded.get(pid)) else {
                continue;
            };
            if m.status != f.payment.status.as_str() {
                outcome.differences.push(Difference {
                    check: "status".into(),
                    key: format!("payment {} ({pid})", m.hex),
                    mongo: m.status.clone(),
                    ledger: f.payment.status.as_str().into(),
                    ids: vec![m.hex.clone()],
                    explained_by: if changed.contains(pid) {
                        None
                    } else {
                        explain_payment(pid, &m.hex)
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
    let (buckets_ledger, source) = ledger_buckets(pool, &ledger).await?;
    outcome.notes.push(source);
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
                .map(|(p, h)| explain_payment(p, h))
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

/// The ledger's buckets: the projection when its projector has caught up with the store,
/// else computed from the import events.
async fn ledger_buckets(
    pool: &PgPool,
    ledger: &HashMap<Uuid, (PaymentImported, String, String)>,
) -> Result<(Buckets, String), sqlx::Error> {
    let behind: Result<i64, sqlx::Error> = sqlx::query_scalar(
        "SELECT count(*) FROM events e, projection.projector_state s \
         WHERE s.projector = 'payments' \
           AND (e.tx_id::text::int8, e.position) > (s.checkpoint_tx, s.checkpoint_position)",
    )
    .fetch_one(pool)
    .await;
    if let Ok(0) = behind {
        let rows: Result<Vec<BucketRow>, _> = sqlx::query_as(
            "SELECT provider, asset, day, sum(payments)::int8, sum(amount) \
             FROM finance.reconciliation_buckets GROUP BY 1, 2, 3",
        )
        .fetch_all(pool)
        .await;
        if let Ok(rows) = rows {
            let map = rows
                .into_iter()
                .map(|(p, a, d, c, s)| ((p, a, d.to_string()), (c, s)))
                .collect();
            return Ok((
                map,
                "ledger buckets from finance.reconciliation_buckets (payments projector caught up)"
                    .into(),
            ));
        }
    }
    let mut map = Buckets::new();
    for (p, _, _) in ledger.values() {
        let b = map
            .entry((
                p.terms.provider.clone(),
                p.terms.asset.code().to_owned(),
                p.created_at.date_naive().to_string(),
            ))
            .or_default();
        b.0 += 1;
        b.1 += p.terms.amount;
    }
    Ok((map, "ledger buckets computed from the event store's PaymentImported events (the payments projector has not caught up or is not there)".into()))
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
