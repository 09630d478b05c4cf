//! The disputes domain's check: each valid dispute in MongoDB is imported, unchanged since
//! its import, and its status is the one its imported stream folds to. A batch of
//! MongoDB's documents at a time: their imports, listings and streams in one query each.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ledger::dispute::{Dispute, DisputeEvent};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Difference, VerifyOutcome};
use crate::ids::Collection;
use crate::mongo::Legacy;
use crate::run::ImportError;
use crate::translate::parse_dispute;

/// An event of a dispute's stream: stream, type, schema version, payload, `occurred_at`.
type EventRow = (Uuid, String, i32, Json<Value>, DateTime<Utc>);

/// Runs the checks of the disputes domain, a batch of MongoDB documents at a time.
///
/// # Errors
/// MongoDB or PostgreSQL failed.
pub async fn verify(
    conn: &mut PgConnection,
    legacy: &Legacy,
    outcome: &mut VerifyOutcome,
) -> Result<(), ImportError> {
    // The valid disputes seen in MongoDB, for the check after the loop.
    sqlx::query("CREATE TEMP TABLE IF NOT EXISTS verify_mdisp (hex text PRIMARY KEY)")
        .execute(&mut *conn)
        .await?;
    sqlx::query("TRUNCATE pg_temp.verify_mdisp")
        .execute(&mut *conn)
        .await?;
    let mut rx = legacy.batches(Collection::Disputes.name(), None, 500);
    while let Some(batch) = rx.recv().await {
        let parsed: Vec<_> = batch?
            .iter()
            .filter_map(|raw| parse_dispute(raw).ok())
            .collect();
        let hexes: Vec<String> = parsed.iter().map(|p| p.source.object_id.clone()).collect();
        sqlx::query(
            "INSERT INTO pg_temp.verify_mdisp SELECT DISTINCT h FROM UNNEST($1::text[]) AS h \
             ON CONFLICT DO NOTHING",
        )
        .bind(&hexes)
        .execute(&mut *conn)
        .await?;
        let imported: HashMap<String, (String, Uuid)> =
            sqlx::query_as::<_, (String, String, Uuid)>(
                "SELECT object_id, digest, id FROM legacy_import.id_map \
                 WHERE collection = 'disputes' AND object_id = ANY($1)",
            )
            .bind(&hexes)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|(o, d, i)| (o, (d, i)))
            .collect();
        let listed: HashMap<String, String> = sqlx::query_as(
            "SELECT object_id, why FROM pg_temp.verify_listed \
             WHERE collection = 'disputes' AND object_id = ANY($1)",
        )
        .bind(&hexes)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        // The imported streams of the batch, read in one query and folded per stream.
        let ids: Vec<Uuid> = imported.values().map(|(_, id)| *id).collect();
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT stream_id, event_type, schema_version, payload, occurred_at FROM events \
             WHERE stream_id = ANY($1) ORDER BY stream_id, version",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let mut folded: HashMap<Uuid, Dispute> = HashMap::new();
        for (stream, t, v, Json(payload), at) in rows {
            if let Ok(e) = DisputeEvent::decode(&t, v, &payload) {
                folded.entry(stream).or_default().apply(&e, at);
            }
        }
        for p in parsed {
            let hex = p.source.object_id.clone();
            let Some((digest, id)) = imported.get(&hex) else {
                if !listed.contains_key(&hex) {
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
            let d = folded.remove(id).unwrap_or_default();
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
                    explained_by: listed.get(&hex).map(|w| format!("disputes {hex}: {w}")),
                });
            }
        }
    }
    name_the_gone(conn, outcome).await?;
    Ok(())
}

/// Names every imported dispute whose document is gone, or no longer parses: its history
/// in the ledger no longer has a source (payments and entries are checked alike).
async fn name_the_gone(
    conn: &mut PgConnection,
    outcome: &mut VerifyOutcome,
) -> Result<(), sqlx::Error> {
    let gone: Vec<String> = sqlx::query_scalar(
        "SELECT m.object_id FROM legacy_import.id_map m \
         WHERE m.collection = 'disputes' \
           AND NOT EXISTS (SELECT 1 FROM pg_temp.verify_mdisp d WHERE d.hex = m.object_id) \
         ORDER BY m.object_id COLLATE \"C\"",
    )
    .fetch_all(&mut *conn)
    .await?;
    for hex in gone {
        outcome.differences.push(Difference {
            check: "changed".into(),
            key: format!("dispute {hex}"),
            mongo: "absent or invalid now".into(),
            ledger: "imported".into(),
            ids: vec![hex],
            explained_by: None,
        });
    }
    Ok(())
}
