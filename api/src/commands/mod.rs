//! The command path: load the streams a command needs, let the aggregate decide, append
//! with optimistic concurrency, record the idempotency key and deposit reference in the
//! same transaction, and on a lost race decide again on fresh state.

mod adjustment;
mod dispute;
mod gather;
mod group;
mod payment;
mod reads;

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use ledger::event::{Actor, ExpectedVersion, Metadata, StreamAppend};
use ledger::refusal::RefusalKind;
use ledger::store::{self, AppendedEvent, StoreError};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use adjustment::{check_shape as adjustment_shape, AdjustCommand};
pub use dispute::DisputeCommand;
pub use group::{GroupCommit, MAX_GROUP};
pub use payment::PaymentCommand;
pub use reads::{Reads, StreamReads};

use crate::auth::Principal;
use crate::http::problem::ApiError;

/// How often a command is decided again after losing a race before answering 409.
const MAX_ATTEMPTS: u32 = 25;

/// How often a command waits for a stream being written by a group or command in flight
/// (each wait ends when that writer is done, or after 200 ms) before such a wait counts
/// as a lost race.
const MAX_WAITS: u32 = 25;

/// How a command appending alone opens its transaction: each statement, and each wait
/// for a lock, is limited to 8 s, so the three statements of its transaction end within
/// the request's 30 s limit and the claim on its streams (released when the request ends)
/// never outlives a write still running in PostgreSQL. A limit hit rolls back: 503, and
/// nothing written. (A keyless command alone is one statement, its own transaction, and
/// waits only for a writer of its own streams.)
const ALONE_BEGIN: &str =
    "BEGIN; SET LOCAL statement_timeout = '8s'; SET LOCAL lock_timeout = '8s'";

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
    /// The main stream's version the request names in `If-Match`, if any.
    pub if_match: Option<i64>,
}

impl Ctx {
    /// Refuses with 412 `version_conflict` when `If-Match` names another version than
    /// `version`, the main stream's as loaded. Checked as soon as the stream is loaded,
    /// before anything is decided: a stale version is answered as such, not with the
    /// refusal that the newer state happens to call for.
    ///
    /// # Errors
    /// [`ApiError::PreconditionFailed`].
    pub fn check_if_match(&self, version: i64) -> Result<(), ApiError> {
        match self.if_match {
            Some(wanted) if wanted != version => Err(ApiError::PreconditionFailed(format!(
                "If-Match names version {wanted}, but the stream is at {version}"
            ))),
            _ => Ok(()),
        }
    }
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
/// An idempotency key is not looked up before deciding: the key's row is inserted in the
/// same transaction as the events, so a request whose key was already used fails on the
/// key's unique constraint (waiting for a concurrent first request to end) and writes
/// nothing. Only then, or when the decision is refused, is the stored response looked
/// up: replayed when the request is the same, `idempotency_key_reused` when it is not,
/// and the refusal itself when the key was never used successfully (refusals are not
/// remembered). A first request costs no lookup and holds no lock.
///
/// The append goes through `group` (see [`GroupCommit`]) unless it is disabled or the
/// command needs a lock of its own (an adjustment out of a platform account); a command
/// whose group failed as a whole runs alone from then on.
///
/// # Errors
/// The refusal the (fresh) state calls for, `version_conflict` for `If-Match` or retries
/// run out, `idempotency_key_reused`, or a database fault.
pub async fn execute(
    pool: &PgPool,
    group: &GroupCommit,
    request: &Request,
    command: &Command,
) -> Result<Answer, ApiError> {
    let mut attempt = 0;
    let mut waits = 0;
    let mut grouped = group.enabled();
    loop {
        attempt += 1;
        match attempt_once(pool, group, grouped, request, command).await {
            Err(Attempt::Alone) => {
                grouped = false;
                attempt -= 1;
            }
            Err(Attempt::Busy(streams)) if waits < MAX_WAITS => {
                // Not a lost race: a stream is being written by a group or command in
                // flight. Decide again once it has committed (or failed).
                waits += 1;
                attempt -= 1;
                group.settled(&streams).await;
            }
            Err(Attempt::Busy(_) | Attempt::Lost) if attempt < MAX_ATTEMPTS => {
                // Jitter keeps a crowd of losers from colliding again in lockstep.
                let jitter = u64::from(Uuid::new_v4().as_bytes()[0] % 8);
                tokio::time::sleep(Duration::from_millis(jitter + u64::from(attempt))).await;
            }
            Err(Attempt::Busy(_) | Attempt::Lost) => {
                // A retry of a request that succeeded long ago decides afresh and can lose
                // every race on a busy stream: its stored answer still comes first.
                if let Some(answer) = replay(pool, request).await? {
                    return Ok(answer);
                }
                return Err(ApiError::RetriesExhausted(format!(
                    "the stream kept moving: gave up after {MAX_ATTEMPTS} attempts; retry"
                )));
            }
            Err(Attempt::KeyTaken) => {
                return match replay(pool, request).await? {
                    Some(answer) => Ok(answer),
                    // The key's first request rolled back after ours failed: try again.
                    None if attempt < MAX_ATTEMPTS => continue,
                    None => Err(ApiError::RetriesExhausted(
                        "the idempotency key kept being taken and released; retry".into(),
                    )),
                };
            }
            Err(Attempt::Refused(e)) => {
                if matches!(e, ApiError::Internal(_) | ApiError::Unavailable(_)) {
                    return Err(e);
                }
                return match replay_when_settled(pool, request).await? {
                    Some(answer) => Ok(answer),
                    None => Err(e),
                };
            }
            Ok(answer) => return Ok(answer),
        }
    }
}

enum Attempt {
    /// Another append moved the stream first: decide again on fresh state.
    Lost,
    /// The command's group failed as a whole, writing nothing: run it again alone.
    Alone,
    /// A group or command in flight is writing these streams of the command: wait for
    /// it, then decide again.
    Busy(Vec<Uuid>),
    /// The idempotency key was already used: answer from its stored response.
    KeyTaken,
    /// The answer is this refusal (unless the key's stored response says otherwise).
    Refused(ApiError),
}

impl<E: Into<ApiError>> From<E> for Attempt {
    fn from(e: E) -> Self {
        Attempt::Refused(e.into())
    }
}

/// One decision and its append. Reads run outside a transaction (the append checks the
/// versions they saw); the append and the rows that must commit with it (the idempotency
/// key, the deposit reference) run in one transaction, and an append with neither is
/// one statement, its own transaction. With `group`, the append is left to the group's
/// transaction instead.
async fn attempt_once(
    pool: &PgPool,
    group: &GroupCommit,
    grouped: bool,
    request: &Request,
    command: &Command,
) -> Result<Answer, Attempt> {
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
        if_match: request.if_match,
    };
    // Alone, the command reads on the connection it will append on; grouped, its reads
    // are gathered with other commands' and it holds no connection of its own.
    let mut held = if grouped {
        None
    } else {
        Some(pool.acquire().await.map_err(ApiError::from)?)
    };
    let decision = {
        let mut reads = match &mut held {
            Some(conn) => Reads::Conn(conn),
            None => Reads::Gathered(group.reads()),
        };
        match command {
            Command::Payment(c) => payment::decide(&mut reads, c, &ctx).await?,
            Command::Dispute(c) => dispute::decide(&mut reads, c, &ctx).await?,
            Command::Adjust(c) => adjustment::decide(&mut reads, c, &ctx).await?,
        }
    };
    let status = if decision.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // An adjustment out of a platform account no stream holds: its balance is checked
    // under a lock, in the transaction that appends it.
    let outflow = match command {
        Command::Adjust(c) => adjustment::outflow(c),
        _ => None,
    };
    let streams: Vec<Uuid> = decision.appends.iter().map(|a| a.stream_id).collect();
    if grouped && outflow.is_none() {
        let key = request
            .idempotency_key
            .as_ref()
            .map(|k| (request.caller.name.clone(), k.clone(), request.request_hash));
        return match group.submit(decision, status, key).await {
            group::Outcome::Committed(answer) => Ok(answer),
            group::Outcome::Lost => Err(Attempt::Lost),
            group::Outcome::Busy => Err(Attempt::Busy(streams)),
            group::Outcome::Alone => Err(Attempt::Alone),
            group::Outcome::Failed(e) => Err(Attempt::Refused(e)),
        };
    }
    // Beside the groups, a command appending alone claims its streams too, so that a
    // group waits for it instead of racing it to a unique-constraint failure.
    let Ok(_claim) = group.hold(&streams) else {
        return Err(Attempt::Busy(streams));
    };
    let mut conn = match held {
        Some(conn) => conn,
        None => pool.acquire().await.map_err(ApiError::from)?,
    };
    let alone = request.idempotency_key.is_none()
        && decision.deposit_reference.is_none()
        && outflow.is_none();
    let (appended, tx) = if alone {
        (store::append(&mut conn, &decision.appends).await, None)
    } else {
        let mut tx = sqlx::Connection::begin_with(&mut *conn, ALONE_BEGIN)
            .await
            .map_err(ApiError::from)?;
        if let Some(o) = &outflow {
            adjustment::check_outflow(&mut tx, o).await?;
        }
        (store::append(&mut tx, &decision.appends).await, Some(tx))
    };
    let appended = match appended {
        Ok(done) => done,
        Err(StoreError::Conflict { .. }) => {
            // Decided again on fresh state, If-Match included: a command naming its main
            // stream's version is refused (412) only when that stream moved, not when the
            // other stream of a two-stream command (a dispute's payment) did.
            drop(tx);
            return Err(Attempt::Lost);
        }
        Err(e) => return Err(Attempt::Refused(e.into())),
    };
    let (body, position) = accepted_body(&decision, &appended)?;
    if let Some(mut tx) = tx {
        record(&mut tx, request, &decision, status, &body, position).await?;
        tx.commit().await.map_err(ApiError::from)?;
    }
    Ok(Answer {
        status,
        body,
        replayed: false,
    })
}

/// The answer's body for a decision whose events were appended, and the position of its
/// last event (which the idempotency key and deposit reference rows point at).
///
/// # Errors
/// [`ApiError::Internal`] when nothing was appended.
fn accepted_body(
    decision: &Decision,
    appended: &[AppendedEvent],
) -> Result<(Vec<u8>, i64), ApiError> {
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
    let body = serde_json::to_vec(&Accepted {
        id: decision.id,
        stream_version,
        position: last.position,
    })
    .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((body, last.position))
}

/// The stored response of the request's idempotency key, if the key was used: replayed
/// when the request is the same, `idempotency_key_reused` when it is not.
async fn replay(pool: &PgPool, request: &Request) -> Result<Option<Answer>, ApiError> {
    let Some(key) = &request.idempotency_key else {
        return Ok(None);
    };
    let stored: Option<(Vec<u8>, i16, Vec<u8>)> = sqlx::query_as(
        "SELECT request_hash, status, response FROM idempotency_keys WHERE client = $1 AND key = $2",
    )
    .bind(&request.caller.name)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    let Some((hash, status, body)) = stored else {
        return Ok(None);
    };
    if hash != request.request_hash {
        return Err(ApiError::IdempotencyKeyReused);
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

/// [`replay`], after waiting for a request with the same key still in flight: a refusal
/// decided beside an uncommitted first request (a deadline that passed between the two,
/// another body with the same key) must answer what that request leaves behind. The wait
/// is an insert of the key that conflicts with the in-flight one's, rolled back: PostgreSQL
/// makes it wait for that transaction to end. Only refusals pay for it.
async fn replay_when_settled(pool: &PgPool, request: &Request) -> Result<Option<Answer>, ApiError> {
    let Some(key) = &request.idempotency_key else {
        return Ok(None);
    };
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO idempotency_keys (client, key, request_hash, status, response, position) \
         SELECT $1, $2, '\\x', 0, '\\x', position FROM events ORDER BY position DESC LIMIT 1 \
         ON CONFLICT DO NOTHING",
    )
    .bind(&request.caller.name)
    .bind(key)
    .execute(&mut *tx)
    .await?;
    tx.rollback().await?;
    replay(pool, request).await
}

/// Records, in one statement, the deposit reference (deposited once) and the idempotency
/// key with the response to replay; a key already used fails on its unique constraint.
async fn record(
    conn: &mut PgConnection,
    request: &Request,
    decision: &Decision,
    status: StatusCode,
    body: &[u8],
    position: i64,
) -> Result<(), Attempt> {
    let (provider, reference) = decision
        .deposit_reference
        .as_ref()
        .map_or((None, None), |(p, r)| (Some(p.as_str()), Some(r.as_str())));
    let done = sqlx::query(
        "WITH reference AS ( \
             INSERT INTO deposit_references (provider, reference, payment_id, position) \
             SELECT $1, $2, $3, $4 WHERE $2::text IS NOT NULL \
         ), key AS ( \
             INSERT INTO idempotency_keys (client, key, request_hash, status, response, position) \
             SELECT $5, $6, $7, $8, $9, $4 WHERE $6::text IS NOT NULL \
         ) \
         SELECT 1",
    )
    .bind(provider)
    .bind(reference)
    .bind(decision.id)
    .bind(position)
    .bind(&request.caller.name)
    .bind(request.idempotency_key.as_deref())
    .bind(request.request_hash.as_slice())
    .bind(i16::try_from(status.as_u16()).unwrap_or(200))
    .bind(body)
    .execute(&mut *conn)
    .await;
    match done {
        Ok(_) => Ok(()),
        // A deadlock with another writer of the same keys: nothing stays, decide again.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("40P01" | "40001")) =>
        {
            Err(Attempt::Lost)
        }
        // Only a unique violation (23505) means the key or reference is taken: another
        // error naming the same index (an entry it cannot hold) is a fault, not a refusal.
        Err(e) => match e
            .as_database_error()
            .filter(|db| db.code().as_deref() == Some("23505"))
            .and_then(sqlx::error::DatabaseError::constraint)
        {
            Some("idempotency_keys_pkey") => Err(Attempt::KeyTaken),
            Some("deposit_references_pkey") => {
                Err(Attempt::Refused(ApiError::DuplicateReference(format!(
                    "reference {:?} was already deposited with provider {}",
                    reference.unwrap_or_default(),
                    provider.unwrap_or_default()
                ))))
            }
            _ => Err(Attempt::Refused(e.into())),
        },
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
/// A stream of another type under the id (a dispute, an adjustment, an imported entry) is
/// not an empty payment: a creation decided on it would append with `NoStream`, conflict
/// with the existing stream on every retry and end in a 409. So the id is refused at once:
/// as taken (`invalid_state`) when `creating`, else as no such payment (`not_found`).
///
/// # Errors
/// [`ApiError::InvalidState`] or [`ApiError::NotFound`] when the id is another type's
/// stream, a database fault, or an event that no longer decodes.
pub async fn load_payment(
    reads: &mut Reads<'_>,
    id: Uuid,
    creating: bool,
) -> Result<ledger::payment::Payment, ApiError> {
    let events = reads.stream(id).await?;
    check_stream_type(&events, id, ledger::payment::STREAM_TYPE, creating)?;
    ledger::payment::Payment::from_history(&events).map_err(|e| ApiError::Internal(e.into()))
}

/// Refuses a stream whose events are of another stream type than `wanted`: when
/// `creating`, the id is taken (`invalid_state`); otherwise there is no `wanted` under
/// it (`not_found`, as for an id never used).
///
/// # Errors
/// [`ApiError::InvalidState`], [`ApiError::NotFound`].
pub fn check_stream_type(
    events: &[ledger::event::RecordedEvent],
    id: Uuid,
    wanted: &str,
    creating: bool,
) -> Result<(), ApiError> {
    match events.first() {
        Some(e) if e.stream_type != wanted && creating => Err(ApiError::InvalidState(format!(
            "id {id} is taken: it is a {} stream, not a {wanted}",
            e.stream_type
        ))),
        Some(e) if e.stream_type != wanted => Err(ApiError::NotFound(format!(
            "no {wanted} {id}: that id is a {} stream",
            e.stream_type
        ))),
        _ => Ok(()),
    }
}

/// The expected version for appending after state at `version`.
pub fn after(version: i64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}
