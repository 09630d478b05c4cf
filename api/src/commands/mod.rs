//! The command path: load the streams a command needs, let the aggregate decide, append
//! with optimistic concurrency, record the idempotency key and deposit reference in the
//! same transaction, and on a lost race decide again on fresh state.

mod adjustment;
mod dispute;
mod payment;

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use ledger::event::{Actor, ExpectedVersion, Metadata, StreamAppend};
use ledger::refusal::RefusalKind;
use ledger::store::{self, StoreError};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use adjustment::{check_shape as adjustment_shape, AdjustCommand};
pub use dispute::DisputeCommand;
pub use payment::PaymentCommand;

use crate::auth::Principal;
use crate::http::problem::ApiError;

/// How often a command is decided again after losing a race before answering 409.
const MAX_ATTEMPTS: u32 = 25;

/// A command, parsed and typed, ready to decide.
#[derive(Debug, Clone)]
pub enum Command {
    /// A payment command.
    Payment(PaymentCommand),
    /// A dispute command.
    Dispute(DisputeCommand),
    /// An adjustment.
    Adjust(AdjustCommand),
}

impl Command {
    /// A short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Payment(c) => c.name(),
            Command::Dispute(c) => c.name(),
            Command::Adjust(_) => "adjust",
        }
    }
}

/// What the command was asked with, besides its body.
#[derive(Debug, Clone)]
pub struct Request {
    /// Who asks.
    pub caller: Principal,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// `If-Match`.
    pub if_match: Option<i64>,
    /// Correlation id.
    pub correlation_id: Uuid,
    /// Causation id (the request id).
    pub causation_id: Option<Uuid>,
    /// A hash of method, path and body (canonical JSON), to recognize a retried request.
    pub request_hash: [u8; 32],
}

/// What the decision step hands to the runner.
#[derive(Debug)]
pub struct Decision {
    /// The id to answer with (payment, dispute or adjustment).
    pub id: Uuid,
    /// The stream whose version is answered and checked against `If-Match`.
    pub main_stream: Uuid,
    /// 201 for a creation, 200 otherwise.
    pub created: bool,
    /// What to append, all in one transaction.
    pub appends: Vec<StreamAppend>,
    /// A provider reference to record as deposited once.
    pub deposit_reference: Option<(String, String)>,
}

/// The context a decision is made in.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Now, once per attempt.
    pub now: DateTime<Utc>,
    /// The metadata every event of this command carries.
    pub metadata: Metadata,
}

/// A successful command's answer: `{ id, stream_version, position }`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The payment, dispute or adjustment id.
    pub id: Uuid,
    /// The main stream's version after the command.
    pub stream_version: i64,
    /// The global position of the command's last event.
    pub position: i64,
}

/// The answer to return: status and exact body bytes (replayed byte for byte).
#[derive(Debug, Clone)]
pub struct Answer {
    /// 200 or 201.
    pub status: StatusCode,
    /// JSON body.
    pub body: Vec<u8>,
    /// Whether this is a replay of an earlier answer.
    pub replayed: bool,
}

/// Runs a command to its answer.
///
/// # Errors
/// The refusal the (fresh) state calls for, `version_conflict` for `If-Match` or retries
/// run out, `idempotency_key_reused`, or a database fault.
pub async fn execute(
    pool: &PgPool,
    request: &Request,
    command: &Command,
) -> Result<Answer, ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match attempt_once(pool, request, command).await {
            Err(Attempt::Lost) if attempt < MAX_ATTEMPTS => {
                // Jitter keeps a crowd of losers from colliding again in lockstep.
                let jitter = u64::from(Uuid::new_v4().as_bytes()[0] % 8);
                tokio::time::sleep(Duration::from_millis(jitter + u64::from(attempt))).await;
            }
            Err(Attempt::Lost) => {
                return Err(ApiError::RetriesExhausted(format!(
                    "the stream kept moving: gave up after {MAX_ATTEMPTS} attempts; retry"
                )))
            }
            Err(Attempt::Refused(e)) => return Err(e),
            Ok(answer) => return Ok(answer),
        }
    }
}

enum Attempt {
    Lost,
    Refused(ApiError),
}

impl<E: Into<ApiError>> From<E> for Attempt {
    fn from(e: E) -> Self {
        Attempt::Refused(e.into())
    }
}

async fn attempt_once(
    pool: &PgPool,
    request: &Request,
    command: &Command,
) -> Result<Answer, Attempt> {
    let mut tx = pool.begin().await.map_err(ApiError::from)?;
    if let Some(replay) = replay(&mut tx, request).await? {
        return Ok(replay);
    }
    let ctx = Ctx {
        now: Utc::now(),
        metadata: Metadata {
            correlation_id: request.correlation_id,
            causation_id: request.causation_id,
            actor: Actor {
                name: request.caller.name.clone(),
                role: request.caller.role.as_str().to_owned(),
            },
            source: "api".into(),
            legacy: None,
        },
    };
    let decision = match command {
        Command::Payment(c) => payment::decide(&mut tx, c, &ctx).await?,
        Command::Dispute(c) => dispute::decide(&mut tx, c, &ctx).await?,
        Command::Adjust(c) => adjustment::decide(&mut tx, c, &ctx).await?,
    };
    check_if_match(request, &decision)?;
    let appended = match store::append(&mut tx, &decision.appends).await {
        Ok(done) => done,
        Err(StoreError::Conflict { .. }) => {
            drop(tx);
            if request.if_match.is_some() {
                return Err(Attempt::Refused(ApiError::PreconditionFailed(
                    "the stream moved on since the version named by If-Match".into(),
                )));
            }
            return Err(Attempt::Lost);
        }
        Err(e) => return Err(Attempt::Refused(e.into())),
    };
    let last = appended
        .iter()
        .max_by_key(|e| e.position)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a decision appended nothing")))?;
    let stream_version = appended
        .iter()
        .filter(|e| e.stream_id == decision.main_stream)
        .map(|e| e.version)
        .max()
        .unwrap_or(last.version);
    if let Some((provider, reference)) = &decision.deposit_reference {
        record_reference(&mut tx, provider, reference, decision.id, last.position).await?;
    }
    let status = if decision.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = serde_json::to_vec(&Accepted {
        id: decision.id,
        stream_version,
        position: last.position,
    })
    .map_err(|e| ApiError::Internal(e.into()))?;
    if let Some(key) = &request.idempotency_key {
        sqlx::query(
            "INSERT INTO idempotency_keys (client, key, request_hash, status, response, position) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&request.caller.name)
        .bind(key)
        .bind(request.request_hash.as_slice())
        .bind(i16::try_from(status.as_u16()).unwrap_or(200))
        .bind(&body)
        .bind(last.position)
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
    }
    tx.commit().await.map_err(ApiError::from)?;
    Ok(Answer {
        status,
        body,
        replayed: false,
    })
}

/// With an idempotency key: waits for any request with the same key to end, then answers
/// with its stored response if it succeeded (or refuses a different request).
async fn replay(conn: &mut PgConnection, request: &Request) -> Result<Option<Answer>, Attempt> {
    let Some(key) = &request.idempotency_key else {
        return Ok(None);
    };
    // One request per (client, key) at a time: a retry waits for the first to end.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("{}\u{1f}{key}", request.caller.name))
        .execute(&mut *conn)
        .await
        .map_err(ApiError::from)?;
    let stored: Option<(Vec<u8>, i16, Vec<u8>)> = sqlx::query_as(
        "SELECT request_hash, status, response FROM idempotency_keys WHERE client = $1 AND key = $2",
    )
    .bind(&request.caller.name)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(ApiError::from)?;
    let Some((hash, status, body)) = stored else {
        return Ok(None);
    };
    if hash != request.request_hash {
        return Err(Attempt::Refused(ApiError::IdempotencyKeyReused));
    }
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    Ok(Some(Answer {
        status,
        body,
        replayed: true,
    }))
}

fn check_if_match(request: &Request, decision: &Decision) -> Result<(), Attempt> {
    let Some(wanted) = request.if_match else {
        return Ok(());
    };
    let expected = decision
        .appends
        .iter()
        .find(|a| a.stream_id == decision.main_stream)
        .map(|a| a.expected);
    let actual = match expected {
        Some(ExpectedVersion::Exact(v)) => v,
        Some(ExpectedVersion::NoStream) => 0,
        _ => return Ok(()),
    };
    if actual == wanted {
        return Ok(());
    }
    Err(Attempt::Refused(ApiError::PreconditionFailed(format!(
        "If-Match names version {wanted}, but the stream is at {actual}"
    ))))
}

async fn record_reference(
    conn: &mut PgConnection,
    provider: &str,
    reference: &str,
    payment_id: Uuid,
    position: i64,
) -> Result<(), Attempt> {
    let inserted = sqlx::query(
        "INSERT INTO deposit_references (provider, reference, payment_id, position) VALUES ($1, $2, $3, $4)",
    )
    .bind(provider)
    .bind(reference)
    .bind(payment_id)
    .bind(position)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_database_error()
                .and_then(sqlx::error::DatabaseError::constraint)
                == Some("deposit_references_pkey") =>
        {
            Err(Attempt::Refused(ApiError::DuplicateReference(format!(
                "reference {reference:?} was already deposited with provider {provider}"
            ))))
        }
        Err(e) => Err(Attempt::Refused(e.into())),
    }
}

/// Maps a domain refusal to the contract's problem.
pub fn refusal(kind: RefusalKind, message: String) -> ApiError {
    match kind {
        RefusalKind::InsufficientFunds => ApiError::InsufficientFunds(message),
        RefusalKind::EscrowFrozen => ApiError::EscrowFrozen(message),
        RefusalKind::InvalidState => ApiError::InvalidState(message),
        RefusalKind::Validation => ApiError::Validation(message),
        RefusalKind::NotFound => ApiError::NotFound(message),
    }
}

/// Loads a payment's state and version.
///
/// # Errors
/// A database fault or an event that no longer decodes.
pub async fn load_payment(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<ledger::payment::Payment, ApiError> {
    let events = store::read_stream(&mut *conn, id).await?;
    if events
        .first()
        .is_some_and(|e| e.stream_type != ledger::payment::STREAM_TYPE)
    {
        return Ok(ledger::payment::Payment::default());
    }
    ledger::payment::Payment::from_history(&events).map_err(|e| ApiError::Internal(e.into()))
}

/// The expected version for appending after state at `version`.
pub fn after(version: i64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}
