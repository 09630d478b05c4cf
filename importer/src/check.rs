//! The checks after a domain's passes: each imported payment's stream folded through the
//! payment aggregate (the same rules as live payments), its projected status compared with
//! its mapped legacy status, and the escrow checked against zero at every step of history.
//! Disagreements are anomalies, listed by id; nothing is changed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ledger::payment::{Payment, PaymentEvent, PaymentImported, PaymentStatus};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ids::Collection;
use crate::legacy::{Anomaly, AnomalyKind};
use crate::store::{insert_anomalies, AnomalyRow};

/// A stored payment event: stream, version, type, schema version, payload, time.
type StoredRow = (Uuid, i64, String, i32, Json<Value>, DateTime<Utc>);

/// A payment's stream folded.
#[derive(Debug, Clone, Default)]
pub struct Folded {
    /// The state after its last event.
    pub payment: Payment,
    /// The lowest the escrow ever was.
    pub min_held: Decimal,
    /// Its import event, if it was imported.
    pub imported: Option<PaymentImported>,
}

/// Folds the streams of `ids` (absent streams are left out).
///
/// # Errors
/// A database error, or a stored event that does not decode.
pub async fn fold_payments(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Folded>, sqlx::Error> {
    let mut out: HashMap<Uuid, Folded> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<StoredRow> = sqlx::query_as(
        // One index range per stream, whatever the statistics say (see
        // `store::entries_with_references`).
        "SELECT e.stream_id, e.version, e.event_type, e.schema_version, e.payload, e.occurred_at \
         FROM (SELECT DISTINCT s FROM UNNEST($1::uuid[]) AS s) AS wanted \
         CROSS JOIN LATERAL (SELECT * FROM events x WHERE x.stream_id = wanted.s \
                             AND x.stream_type = 'payment') AS e \
         ORDER BY e.stream_id, e.version",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    for (stream_id, version, event_type, schema_version, Json(payload), occurred_at) in rows {
        let event = PaymentEvent::decode(&event_type, schema_version, &payload)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let folded = out.entry(stream_id).or_default();
        if let PaymentEvent::PaymentImported(e) = &event {
            folded.imported = Some(e.clone());
        }
        folded
            .payment
            .try_apply(&event, occurred_at)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        folded.payment.version = version;
        folded.min_held = folded.min_held.min(folded.payment.held);
    }
    Ok(out)
}

/// The anomalies of one folded payment: negative escrow in history, a status that
/// disagrees with the mapped legacy one (a legacy `disputed` only once disputes are
/// imported), a cancelled payment still holding money.
pub fn payment_anomalies(f: &Folded, include_disputed: bool) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let Some(imported) = &f.imported else {
        return out;
    };
    let p = &f.payment;
    if f.min_held < Decimal::ZERO {
        out.push(Anomaly::new(
            AnomalyKind::NegativeEscrow,
            format!(
                "history drove the escrow to {} {}",
                f.min_held, imported.terms.asset
            ),
        ));
    }
    let deferred = imported.mapped_status == PaymentStatus::Disputed && !include_disputed;
    if !deferred && imported.mapped_status != p.status {
        out.push(Anomaly::new(
            AnomalyKind::StatusDisagreement,
            format!(
                "legacy status {} (ours: {}) but its history says {}",
                imported.legacy_status, imported.mapped_status, p.status
            ),
        ));
    }
    if p.status == PaymentStatus::Cancelled && !p.held.is_zero() {
        out.push(Anomaly::new(
            AnomalyKind::CancelledWithFundsHeld,
            format!(
                "{} (legacy) but {} {} held",
                imported.legacy_status, p.held, imported.terms.asset
            ),
        ));
    }
    out
}

/// Folds every imported payment, in pages, and records its anomalies in place of those its
/// last fold found. `include_disputed`: disputes are imported (a legacy `disputed`
/// status is then checked too).
///
/// # Errors
/// A database error.
pub async fn reconcile_payments(
    conn: &mut PgConnection,
    include_disputed: bool,
) -> Result<(), sqlx::Error> {
    let mut after = String::new();
    loop {
        let page: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT object_id, id FROM legacy_import.id_map \
             WHERE collection = 'payments' AND object_id > $1 ORDER BY object_id LIMIT 1000",
        )
        .bind(&after)
        .fetch_all(&mut *conn)
        .await?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after.clone_from(last);
        let ids: Vec<Uuid> = page.iter().map(|(_, id)| *id).collect();
        let folded = fold_payments(conn, &ids).await?;
        let mut rows = Vec::new();
        for (hex, id) in &page {
            if let Some(f) = folded.get(id) {
                for anomaly in payment_anomalies(f, include_disputed) {
                    rows.push(AnomalyRow {
                        collection: Collection::Payments.name(),
                        object_id: hex.clone(),
                        anomaly,
                    });
                }
            }
        }
        // The findings of a fold replace the last ones: a retried entry may have put the
        // history right (or wrong), and a stale listing would still explain a difference
        // in verify.
        let hexes: Vec<String> = page.iter().map(|(hex, _)| hex.clone()).collect();
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        // The kinds of `payment_anomalies`, cleared by the owner (migration 0011).
        sqlx::query("SELECT legacy_import.clear_fold_anomalies($1)")
            .bind(&hexes)
            .execute(&mut *tx)
            .await?;
        insert_anomalies(&mut tx, &rows, false).await?;
        tx.commit().await?;
    }
}
