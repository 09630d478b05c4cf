//! `GET /v1/legacy/{collection}/{object_id}`: the UUID a legacy MongoDB document was
//! imported as, and its stream (`docs/legacy-ids.md`). For the collections that are only
//! referenced (`users`, `purchaserequests`, `selleroffers`, `chats`) it answers the derived
//! UUID, with no stream. Readable by every role.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use importer::ids::{is_object_id_hex, Collection};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::events::StoreReadQuery;
use super::extract::Caller;
use super::problem::ApiError;
use super::AppState;
use crate::auth::Role;

/// What a legacy id became.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyId {
    /// The legacy collection.
    pub collection: String,
    /// The ObjectId, 24 lower-case hex digits.
    pub object_id: String,
    /// The ledger UUID (UUID v5 under the collection's published namespace).
    pub id: Uuid,
    /// Whether the document was imported (false for referenced-only collections).
    pub imported: bool,
    /// Its stream, when imported.
    pub stream_id: Option<Uuid>,
    /// The stream's type (`payment`, `dispute`, `legacy_entry`), when imported.
    pub stream_type: Option<String>,
    /// When it was imported.
    pub imported_at: Option<DateTime<Utc>>,
}

/// Looks a legacy id up.
#[utoipa::path(get, path = "/v1/legacy/{collection}/{object_id}", tag = "legacy",
    params(("collection" = String, Path, description = "payments, fundsledgerentries, disputes, users, purchaserequests, selleroffers or chats"),
           ("object_id" = String, Path, description = "24 hex digits"), StoreReadQuery),
    responses((status = 200, body = LegacyId), (status = 400), (status = 404)))]
pub async fn lookup(
    State(state): State<AppState>,
    caller: Caller,
    Path((collection, object_id)): Path<(String, String)>,
    q: Result<Query<StoreReadQuery>, QueryRejection>,
) -> Result<Json<LegacyId>, ApiError> {
    caller.require(
        &[Role::Coordinator, Role::Admin, Role::Finance],
        "look up legacy ids",
    )?;
    StoreReadQuery::checked(q)?;
    let c = Collection::from_name(&collection)
        .filter(|c| !matches!(c, Collection::DisputeEvidence | Collection::DisputeMessages))
        .ok_or_else(|| ApiError::NotFound(format!("no legacy collection {collection:?}")))?;
    if !is_object_id_hex(&object_id) {
        return Err(ApiError::validation(format!(
            "{object_id:?} is not an ObjectId (24 hex digits)"
        )));
    }
    let object_id = object_id.to_ascii_lowercase();
    if !c.is_imported() {
        return Ok(Json(LegacyId {
            collection,
            id: c.uuid_of(&object_id),
            object_id,
            imported: false,
            stream_id: None,
            stream_type: None,
            imported_at: None,
        }));
    }
    let row: Option<(Uuid, Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, stream_id, stream_type, imported_at FROM legacy_import.id_map \
         WHERE collection = $1 AND object_id = $2",
    )
    .bind(c.name())
    .bind(&object_id)
    .fetch_optional(&state.pool)
    .await?;
    let Some((id, stream_id, stream_type, imported_at)) = row else {
        let rejected: Option<String> = sqlx::query_scalar(
            "SELECT reason FROM legacy_import.rejects \
             WHERE collection = $1 AND object_id = $2 AND resolved_at IS NULL",
        )
        .bind(c.name())
        .bind(&object_id)
        .fetch_optional(&state.pool)
        .await?;
        return Err(ApiError::NotFound(match rejected {
            Some(reason) => {
                format!("{collection} {object_id} was rejected by the import: {reason}")
            }
            None => format!("{collection} {object_id} was not imported"),
        }));
    };
    Ok(Json(LegacyId {
        collection,
        object_id,
        id,
        imported: true,
        stream_id: Some(stream_id),
        stream_type: Some(stream_type),
        imported_at: Some(imported_at),
    }))
}
