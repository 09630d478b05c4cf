//! Rejected documents as they were rejected: a reject explains the differences of its
//! document (and of its payment), but only while the document is the one that was
//! rejected. One changed in MongoDB since (a zero deposit made into 5,000) is named and
//! never explained; one deleted since is named too (`--retry-rejects` closes the reject
//! of a document that is gone). Compared byte for byte with the document as the import
//! read it, a batch of rejects at a time.

use bson::oid::ObjectId;
use sqlx::PgConnection;

use super::{Difference, VerifyOutcome};
use crate::mongo::Legacy;
use crate::run::ImportError;

/// Rejects read and looked up in MongoDB at a time.
const BATCH: i64 = 500;

/// Checks every open reject of `collection` whose `_id` is an ObjectId (the others were
/// rejected for their `_id` itself and are counted, not looked up).
///
/// # Errors
/// MongoDB or PostgreSQL failed.
pub async fn verify(
    conn: &mut PgConnection,
    legacy: &Legacy,
    collection: &str,
    outcome: &mut VerifyOutcome,
) -> Result<(), ImportError> {
    let mut after = String::new();
    loop {
        let rejects: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT object_id, code, raw_bson FROM legacy_import.rejects \
             WHERE collection = $1 AND resolved_at IS NULL AND object_id > $2 COLLATE \"C\" \
             ORDER BY object_id COLLATE \"C\" LIMIT $3",
        )
        .bind(collection)
        .bind(&after)
        .bind(BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let Some((last, _, _)) = rejects.last() else {
            return Ok(());
        };
        after.clone_from(last);
        let ids: Vec<ObjectId> = rejects
            .iter()
            .filter_map(|(hex, _, _)| ObjectId::parse_str(hex).ok())
            .collect();
        let now = legacy.by_ids(collection, &ids).await?;
        for (hex, code, raw) in &rejects {
            let Ok(id) = ObjectId::parse_str(hex) else {
                continue;
            };
            let current = now.iter().find(
                |d| matches!(d.get("_id"), Ok(Some(bson::RawBsonRef::ObjectId(o))) if o == id),
            );
            let mongo = match current {
                Some(d) if d.as_bytes() == raw.as_slice() => continue,
                Some(_) => "changed since it was rejected",
                None => "absent now",
            };
            outcome.differences.push(Difference {
                check: "rejected".into(),
                key: format!("{collection} {hex}"),
                mongo: mongo.into(),
                ledger: format!("rejected: {code}"),
                ids: vec![hex.clone()],
                explained_by: None,
            });
        }
    }
}
