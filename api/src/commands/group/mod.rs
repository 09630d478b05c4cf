//! Group commit: commands decided at the same moment append in one transaction.
//!
//! Each command is still decided alone, on its own reads. What it would append, its
//! idempotency key and its deposit reference are handed to a committer, which takes every
//! command waiting at that moment (up to [`MAX_GROUP`]) and writes them with one append
//! statement, one statement for the keys and references, and one commit. PostgreSQL then
//! pays one transaction, one WAL flush and a handful of round trips for the group instead
//! of for each command.
//!
//! A group never changes what a command means:
//! - each command's streams are checked at their expected versions in the statement; a
//!   command whose stream moved is taken out of the group (nothing of the group is
//!   inserted until the statement passes for all) and decides again on fresh state, as a
//!   lost race always does;
//! - a stream is written by one group or one command at a time ([`claims`]): a command on
//!   a stream being written waits for that writer, then decides again; so each event's
//!   hash follows its stream's previous one;
//! - a member whose key is already used or whose reference is already deposited is taken
//!   out (the group rolls back to its savepoint and writes again without it) and runs
//!   alone, on the path that gives each of those faults its own answer ([`write`]);
//!   anything else that fails before the commit sends the whole group there;
//! - a commit whose outcome is unknown (the connection lost during it) is answered as the
//!   fault it is, never run again.

mod claims;
mod write;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

pub(crate) use claims::Claim;
use claims::Claims;

use super::{Answer, Decision, StreamReads};
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

/// The longest one wait for a claimed stream lasts before the command decides again.
const SETTLE_LIMIT: Duration = Duration::from_millis(200);

/// The handle commands are submitted through; cloning it is cheap.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queue: Option<mpsc::Sender<Submission>>,
    claims: Arc<Claims>,
    reads: StreamReads,
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
    /// A stream of the command is being written by a group or command in flight, which
    /// will move it: wait for it ([`GroupCommit::settled`]), then decide again. Not a
    /// lost race.
    Busy,
    /// The command cannot be written in a group (its key is used, its reference
    /// deposited, or the group failed for a reason it cannot pin on one member), and
    /// nothing of it was written: run it alone.
    Alone,
    /// The commit's outcome is unknown or failed for good: answer this.
    Failed(ApiError),
}

impl GroupCommit {
    /// Starts the committers and the gathered readers on `pool`. They stop when every
    /// handle is dropped.
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

    /// Whether commands are grouped.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Where grouped commands read their streams (gathered reads).
    pub fn reads(&self) -> &StreamReads {
        &self.reads
    }

    /// For a command appending alone beside the groups: claims its streams, so groups
    /// wait for it rather than race it. `Err` when one is claimed (wait, decide again);
    /// `Ok(None)` when there are no groups to keep apart from.
    pub(super) fn hold(&self, streams: &[Uuid]) -> Result<Option<Claim>, ()> {
        if self.queue.is_none() {
            return Ok(None);
        }
        self.claims.try_claim(streams).map(Some).ok_or(())
    }

    /// Waits until none of `streams` is being written, or [`SETTLE_LIMIT`].
    pub(super) async fn settled(&self, streams: &[Uuid]) {
        self.claims.settled(streams, SETTLE_LIMIT).await;
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
        let Some(waiting) = super::gather::next_batch(&receiver, MAX_GROUP).await else {
            return;
        };
        let (members, busy, claim) = claims.claim_group(waiting);
        for s in busy {
            count(&Outcome::Busy, 1);
            let _ = s.reply.send(Outcome::Busy);
        }
        if members.is_empty() {
            continue;
        }
        let size = u32::try_from(members.len()).unwrap_or(u32::MAX);
        metrics::histogram!("group_commit_size").record(f64::from(size));
        // The write runs in a task of its own: a panic in it ends that task (its members'
        // clients hear of an unknown outcome), not this committer; the limit bounds a hung
        // connection.
        let pool = pool.clone();
        let mut task = tokio::spawn(async move {
            let outcomes = write::write(&pool, &members).await;
            (members, outcomes)
        });
        let done = if let Ok(done) = tokio::time::timeout(WRITE_LIMIT, &mut task).await {
            done
        } else {
            tracing::error!(limit = ?WRITE_LIMIT, "a group commit's write ran past its limit");
            task.abort();
            // The streams stay claimed until the write is truly over (its connection
            // dropped, its transaction with it).
            task.await
        };
        // Streams are let go before anyone hears back, so a client's next command on the
        // same payment does not wait for nothing.
        drop(claim);
        match done {
            Ok((members, outcomes)) => {
                for (member, outcome) in members.into_iter().zip(outcomes) {
                    count(&outcome, 1);
                    let _ = member.reply.send(outcome);
                }
            }
            Err(ended) => {
                // Its members' replies were dropped with it: each hears of an unknown
                // outcome.
                count(&Outcome::Failed(ApiError::Unavailable(String::new())), size);
                tracing::error!(error = %ended, "a group commit's write ended abnormally");
            }
        }
    }
}

/// Counts what became of grouped commands, for `/metrics`: many `alone` mean members
/// keep being taken out of groups (retried requests, references deposited twice).
fn count(outcome: &Outcome, n: u32) {
    let name = match outcome {
        Outcome::Committed(_) => "committed",
        Outcome::Lost => "lost",
        Outcome::Busy => "busy",
        Outcome::Alone => "alone",
        Outcome::Failed(_) => "failed",
    };
    metrics::counter!("group_commit_commands_total", "outcome" => name).increment(u64::from(n));
}
