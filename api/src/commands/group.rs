//! Group commit: commands decided at the same moment append in one transaction.
//!
//! Each command is still decided alone, on its own reads. What it would append, its
//! idempotency key and its deposit reference are handed to a committer, which takes every
//! command waiting at that moment (up to [`MAX_GROUP`]) and writes them with one append
//! statement, one statement for the keys and references, and one commit. PostgreSQL then
//! pays one transaction, one WAL flush and four round trips for the group instead of for
//! each command.
//!
//! A group never changes what a command means:
//! - each command's streams are checked at their expected versions in the statement; a
//!   command whose stream moved is taken out of the group (nothing of the group is
//!   inserted until the statement passes for all) and decides again on fresh state, as a
//!   lost race always does;
//! - two commands of one group never share a stream (the later one decides again after
//!   the earlier commits), so each event's hash follows its stream's previous one;
//! - anything else that fails before the commit (a key already used, a reference already
//!   deposited, a race found by a unique constraint) rolls the group back, and each of its
//!   commands runs again alone, on the path that gives each fault its own answer;
//! - a commit whose outcome is unknown (the connection lost during it) is answered as the
//!   fault it is, never run again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use axum::http::StatusCode;
use ledger::store::{self, Appended, AppendedEvent};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use uuid::Uuid;

use super::{accepted_body, Answer, Decision, StreamReads};
use crate::http::problem::ApiError;

/// The most commands one group holds.
pub const MAX_GROUP: usize = 64;

/// How many groups may be in flight at once (each on its own connection).
const COMMITTERS: usize = 2;

/// Commands waiting for a committer, most of them.
const QUEUE: usize = 1024;

/// The longest a group may take to write and commit. Past it the group's commands are
/// answered as faults of unknown outcome (503: retry with the same `Idempotency-Key`) and
/// their streams are let go, so a hung connection cannot hold payments for good.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// The handle commands are submitted through; cloning it is cheap.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queue: Option<mpsc::Sender<Submission>>,
    claims: Arc<Claims>,
    reads: StreamReads,
}

/// The streams of the groups in flight, and a signal each time some are let go.
#[derive(Debug, Default)]
struct Claims {
    streams: StdMutex<HashSet<Uuid>>,
    released: Notify,
}

/// What a command asks the committer to write.
#[derive(Debug)]
pub(super) struct Submission {
    /// The decision: its appends, answer id and deposit reference.
    pub decision: Decision,
    /// 200 or 201.
    pub status: StatusCode,
    /// `(client, key, request hash)` when the request has an `Idempotency-Key`.
    pub key: Option<(String, String, [u8; 32])>,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Outcome>,
}

/// What became of a submitted command.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Committed; the answer to give.
    Committed(Answer),
    /// A stream of the command moved: decide again on fresh state.
    Lost,
    /// A stream of the command is in a group still in flight, which will move it: wait
    /// for that group ([`GroupCommit::settled`]), then decide again. Not a lost race.
    Busy,
    /// The group failed for a reason it cannot pin on one command, writing nothing: run
    /// it alone.
    Alone,
    /// The commit's outcome is unknown or failed for good: answer this.
    Failed(ApiError),
}

impl GroupCommit {
    /// Starts the committers on `pool`. They stop when every handle is dropped.
    pub fn spawn(pool: &PgPool) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let claims = Arc::new(Claims::default());
        for _ in 0..COMMITTERS {
            tokio::spawn(committer(
                pool.clone(),
                Arc::clone(&receiver),
                Arc::clone(&claims),
            ));
        }
        GroupCommit {
            queue: Some(sender),
            claims,
            reads: StreamReads::spawn(pool),
        }
    }

    /// No group commit: every command reads on its own connection and appends in its
    /// own transaction.
    pub fn disabled(pool: &PgPool) -> Self {
        GroupCommit {
            queue: None,
            claims: Arc::new(Claims::default()),
            reads: StreamReads::direct(pool),
        }
    }

    /// Where grouped commands read their streams (gathered reads).
    pub fn reads(&self) -> &StreamReads {
        &self.reads
    }

    /// Whether commands are grouped.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Waits until a group in flight lets its streams go, or a short while (a group that
    /// ended between the answer [`Outcome::Busy`] and this call is not waited for).
    pub(super) async fn settled(&self) {
        let _ =
            tokio::time::timeout(Duration::from_millis(20), self.claims.released.notified()).await;
    }

    /// Hands a decided command to a committer and waits for its outcome.
    pub(super) async fn submit(
        &self,
        decision: Decision,
        status: StatusCode,
        key: Option<(String, String, [u8; 32])>,
    ) -> Outcome {
        let Some(queue) = &self.queue else {
            return Outcome::Alone;
        };
        let (reply, outcome) = oneshot::channel();
        let submission = Submission {
            decision,
            status,
            key,
            reply,
        };
        if queue.send(submission).await.is_err() {
            // No committer took it: nothing of it was written.
            return Outcome::Alone;
        }
        // A committer that took it and went away without answering (a panic, the write
        // limit) may have committed it: that is an unknown outcome, never a second run.
        outcome.await.unwrap_or_else(|_| {
            Outcome::Failed(ApiError::Unavailable(
                "the command's group commit ended without an answer; retry with the same \
                 Idempotency-Key"
                    .into(),
            ))
        })
    }
}

/// Takes the waiting commands as one group, writes it, answers each, and again.
async fn committer(
    pool: PgPool,
    receiver: Arc<Mutex<mpsc::Receiver<Submission>>>,
    claims: Arc<Claims>,
) {
    loop {
        let waiting = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut waiting = vec![first];
            while waiting.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(s) => waiting.push(s),
                    Err(_) => break,
                }
            }
            waiting
        };
        let (members, busy, claim) = claim(&claims, waiting);
        for s in busy {
            count(&Outcome::Busy);
            let _ = s.reply.send(Outcome::Busy);
        }
        if members.is_empty() {
            continue;
        }
        metrics::histogram!("group_commit_size")
            .record(f64::from(u32::try_from(members.len()).unwrap_or(u32::MAX)));
        // The write runs in a task of its own: a panic in it ends that task (its members'
        // clients hear of an unknown outcome), not this committer; the limit bounds a hung
        // connection. Either way the claim is let go when it drops.
        let pool = pool.clone();
        let mut write = tokio::spawn(async move {
            let outcomes = write(&pool, &members).await;
            (members, outcomes)
        });
        let done = tokio::time::timeout(WRITE_LIMIT, &mut write).await;
        // Streams are let go before anyone hears back, so a client's next command on the
        // same payment is not sent to wait for nothing.
        drop(claim);
        match done {
            Ok(Ok((members, outcomes))) => {
                for (member, outcome) in members.into_iter().zip(outcomes) {
                    count(&outcome);
                    let _ = member.reply.send(outcome);
                }
            }
            Ok(Err(panicked)) => {
                tracing::error!(error = %panicked, "a group commit's write ended abnormally");
            }
            Err(_) => {
                write.abort();
                tracing::error!(limit = ?WRITE_LIMIT, "a group commit's write ran past its limit");
            }
        }
    }
}

/// Counts what became of grouped commands, for `/metrics`: many `alone` mean groups keep
/// failing for one member (retried requests, references deposited twice).
fn count(outcome: &Outcome) {
    let name = match outcome {
        Outcome::Committed(_) => "committed",
        Outcome::Lost => "lost",
        Outcome::Busy => "busy",
        Outcome::Alone => "alone",
        Outcome::Failed(_) => "failed",
    };
    metrics::counter!("group_commit_commands_total", "outcome" => name).increment(1);
}

/// The streams a group holds while in flight; let go (and waiters told) when dropped.
struct Claim {
    claims: Arc<Claims>,
    streams: Vec<Uuid>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut taken = self
            .claims
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in &self.streams {
            taken.remove(s);
        }
        drop(taken);
        self.claims.released.notify_waiters();
    }
}

/// Splits the waiting commands into those that join the group and those that must wait:
/// a command naming a stream that another command of this group, or of a group still in
/// flight, appends to decided on a version that is about to move.
fn claim(
    claims: &Arc<Claims>,
    waiting: Vec<Submission>,
) -> (Vec<Submission>, Vec<Submission>, Claim) {
    let mut taken = claims
        .streams
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut members = Vec::with_capacity(waiting.len());
    let mut busy = Vec::new();
    let mut streams = Vec::new();
    for s in waiting {
        if s.decision
            .appends
            .iter()
            .any(|a| taken.contains(&a.stream_id))
        {
            busy.push(s);
        } else {
            for a in &s.decision.appends {
                taken.insert(a.stream_id);
                streams.push(a.stream_id);
            }
            members.push(s);
        }
    }
    drop(taken);
    let claim = Claim {
        claims: Arc::clone(claims),
        streams,
    };
    (members, busy, claim)
}

/// Writes the group in one transaction: one outcome per member, in order.
async fn write(pool: &PgPool, members: &[Submission]) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = members.iter().map(|_| None).collect();
    match try_write(pool, members, &mut outcomes).await {
        Ok(()) => {}
        Err(Fault::Retry) => {
            for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                *o = Some(Outcome::Alone);
            }
        }
        Err(Fault::Unknown(e)) => {
            for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                *o = Some(Outcome::Failed(ApiError::from(clone_error(&e))));
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Alone))
        .collect()
}

/// Why a group did not commit.
enum Fault {
    /// Nothing was written: run the members alone.
    Retry,
    /// The commit's outcome is unknown.
    Unknown(sqlx::Error),
}

async fn try_write(
    pool: &PgPool,
    members: &[Submission],
    outcomes: &mut [Option<Outcome>],
) -> Result<(), Fault> {
    let mut tx = pool.begin().await.map_err(|_| Fault::Retry)?;
    let appended = loop {
        let live: Vec<usize> = (0..members.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let appends: Vec<_> = live
            .iter()
            .flat_map(|&i| members[i].decision.appends.iter().cloned())
            .collect();
        match store::append_or_refuse(&mut tx, &appends).await {
            Ok(Appended::Done(events)) => break events,
            Ok(Appended::Refused(moved)) => {
                for &i in &live {
                    let streams = &members[i].decision.appends;
                    if streams.iter().any(|a| moved.contains_key(&a.stream_id)) {
                        outcomes[i] = Some(Outcome::Lost);
                    }
                }
            }
            Err(_) => return Err(Fault::Retry),
        }
    };
    let mut owner: HashMap<Uuid, usize> = HashMap::new();
    for (i, m) in members.iter().enumerate() {
        if outcomes[i].is_none() {
            owner.extend(m.decision.appends.iter().map(|a| (a.stream_id, i)));
        }
    }
    let mut events: HashMap<usize, Vec<AppendedEvent>> = HashMap::new();
    for e in appended {
        let i = owner.get(&e.stream_id).copied().ok_or(Fault::Retry)?;
        events.entry(i).or_default().push(e);
    }
    let mut rows = Rows::default();
    let mut answers: Vec<(usize, Answer)> = Vec::with_capacity(events.len());
    for (i, m) in members.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        let mine = events.get(&i).map_or(&[][..], Vec::as_slice);
        let (body, position) = accepted_body(&m.decision, mine).map_err(|_| Fault::Retry)?;
        rows.add(m, &body, position);
        answers.push((
            i,
            Answer {
                status: m.status,
                body,
                replayed: false,
            },
        ));
    }
    rows.write(&mut tx).await.map_err(|_| Fault::Retry)?;
    match tx.commit().await {
        Ok(()) => {}
        // A lost connection, however reported (a pooler answers some with an error
        // message): the commit may have happened.
        Err(e) if store::is_unavailable(&e) => return Err(Fault::Unknown(e)),
        // The server answered: it rolled the transaction back (a deferred check).
        Err(sqlx::Error::Database(_)) => return Err(Fault::Retry),
        Err(e) => return Err(Fault::Unknown(e)),
    }
    for (i, answer) in answers {
        outcomes[i] = Some(Outcome::Committed(answer));
    }
    Ok(())
}

/// The group's idempotency keys and deposit references, one array per column.
#[derive(Default)]
struct Rows {
    r_provider: Vec<String>,
    r_reference: Vec<String>,
    r_payment: Vec<Uuid>,
    r_position: Vec<i64>,
    k_client: Vec<String>,
    k_key: Vec<String>,
    k_hash: Vec<Vec<u8>>,
    k_status: Vec<i16>,
    k_response: Vec<Vec<u8>>,
    k_position: Vec<i64>,
}

impl Rows {
    fn add(&mut self, m: &Submission, body: &[u8], position: i64) {
        if let Some((provider, reference)) = &m.decision.deposit_reference {
            self.r_provider.push(provider.clone());
            self.r_reference.push(reference.clone());
            self.r_payment.push(m.decision.id);
            self.r_position.push(position);
        }
        if let Some((client, key, hash)) = &m.key {
            self.k_client.push(client.clone());
            self.k_key.push(key.clone());
            self.k_hash.push(hash.to_vec());
            self.k_status
                .push(i16::try_from(m.status.as_u16()).unwrap_or(200));
            self.k_response.push(body.to_vec());
            self.k_position.push(position);
        }
    }

    /// One statement for all of them; a key already used or a reference already
    /// deposited fails it on its unique constraint.
    async fn write(&self, conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        if self.r_provider.is_empty() && self.k_client.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "WITH reference AS ( \
                 INSERT INTO deposit_references (provider, reference, payment_id, position) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::int8[]) \
             ), key AS ( \
                 INSERT INTO idempotency_keys (client, key, request_hash, status, response, position) \
                 SELECT * FROM UNNEST($5::text[], $6::text[], $7::bytea[], $8::int2[], \
                                      $9::bytea[], $10::int8[]) \
             ) \
             SELECT 1",
        )
        .bind(&self.r_provider)
        .bind(&self.r_reference)
        .bind(&self.r_payment)
        .bind(&self.r_position)
        .bind(&self.k_client)
        .bind(&self.k_key)
        .bind(&self.k_hash)
        .bind(&self.k_status)
        .bind(&self.k_response)
        .bind(&self.k_position)
        .execute(conn)
        .await
        .map(|_| ())
    }
}

/// A commit fault for every member of the group: `sqlx::Error` is not `Clone`, so each
/// gets the same text as an I/O error (the answer is a 503 or 500 either way).
fn clone_error(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(e.to_string()))
}
