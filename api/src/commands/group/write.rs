//! Writing one group: its members' events in one append statement, their keys and deposit
//! references in one statement, one commit.
//!
//! The transaction starts with a savepoint. A member whose stream moved is found by the
//! append's version checks before anything is inserted; a member whose idempotency key is
//! already used or whose deposit reference is already deposited (by another transaction
//! or an earlier member of the group) is found by the key and reference insert, which
//! skips such rows: the group then rolls back to the savepoint, that member is answered
//! [`Outcome::Alone`] (the path that gives each of those faults its answer) and the rest
//! write again. Only a fault that names no member fails the whole group.

use std::collections::{HashMap, HashSet};

use ledger::store::{self, Appended, AppendedEvent};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Outcome, Submission};
use crate::commands::{accepted_body, Answer};
use crate::http::problem::ApiError;

/// Sent with the group's savepoint, in one round trip: limits below the committer's
/// `WRITE_LIMIT` (10 s) on each statement and on each lock wait.
const STATEMENT_LIMITS: &str =
    "SET LOCAL statement_timeout = '8s'; SET LOCAL lock_timeout = '8s'; SAVEPOINT group_write";

/// Sets the limits and takes the savepoint ([`STATEMENT_LIMITS`]): several statements in
/// one round trip, through the simple protocol.
async fn begin_group(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let mut results = sqlx::raw_sql(STATEMENT_LIMITS).execute_many(conn);
    while let Some(result) = futures::StreamExt::next(&mut results).await {
        result?;
    }
    Ok(())
}

/// Writes the group in one transaction: one outcome per member, in order.
pub(super) async fn write(pool: &PgPool, members: &[Submission]) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = members.iter().map(|_| None).collect();
    match try_write(pool, members, &mut outcomes).await {
        Ok(()) => {}
        Err(Fault::Retry) => {
            for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                *o = Some(Outcome::Alone);
            }
        }
        Err(Fault::Unknown(e)) => {
            tracing::error!(error = %e, "a group commit's outcome is unknown");
            for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                *o = Some(Outcome::Failed(ApiError::Unavailable(
                    "the database connection was lost during the commit: the command may \
                     have been written; retry with the same Idempotency-Key"
                        .into(),
                )));
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
    // Every statement of the group ends (and rolls the group back) before the committer's
    // limit: a group past it is not left running in PostgreSQL, holding its streams'
    // next versions and its keys, after the committer has let them go.
    begin_group(&mut tx).await.map_err(|_| Fault::Retry)?;
    let answers = loop {
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
        let events = match store::append_or_refuse(&mut tx, &appends).await {
            Ok(Appended::Done(events)) => events,
            Ok(Appended::Refused(moved)) => {
                // Nothing was inserted: take out the members whose streams moved.
                let mut taken_out = false;
                for &i in &live {
                    let streams = &members[i].decision.appends;
                    if streams.iter().any(|a| moved.contains_key(&a.stream_id)) {
                        outcomes[i] = Some(Outcome::Lost);
                        taken_out = true;
                    }
                }
                if !taken_out {
                    return Err(Fault::Retry);
                }
                continue;
            }
            Err(_) => return Err(Fault::Retry),
        };
        let (rows, answers) = lay_out(members, &live, events)?;
        let written = rows.write(&mut tx).await.map_err(|_| Fault::Retry)?;
        let mut skipped = false;
        for &i in &live {
            if rows.skipped(i, &written) {
                outcomes[i] = Some(Outcome::Alone);
                skipped = true;
            }
        }
        if !skipped {
            break answers;
        }
        sqlx::query("ROLLBACK TO SAVEPOINT group_write")
            .execute(&mut *tx)
            .await
            .map_err(|_| Fault::Retry)?;
    };
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

/// Each live member's answer, and the key and reference rows that must commit with it.
fn lay_out(
    members: &[Submission],
    live: &[usize],
    appended: Vec<AppendedEvent>,
) -> Result<(Rows, Vec<(usize, Answer)>), Fault> {
    let mut owner: HashMap<Uuid, usize> = HashMap::new();
    for &i in live {
        owner.extend(members[i].decision.appends.iter().map(|a| (a.stream_id, i)));
    }
    let mut events: HashMap<usize, Vec<AppendedEvent>> = HashMap::new();
    for e in appended {
        let i = owner.get(&e.stream_id).copied().ok_or(Fault::Retry)?;
        events.entry(i).or_default().push(e);
    }
    let mut rows = Rows::default();
    let mut answers = Vec::with_capacity(live.len());
    for &i in live {
        let m = &members[i];
        let mine = events.get(&i).map_or(&[][..], Vec::as_slice);
        let (body, position) = accepted_body(&m.decision, mine).map_err(|_| Fault::Retry)?;
        rows.add(i, m, &body, position);
        answers.push((
            i,
            Answer {
                status: m.status,
                body,
                replayed: false,
            },
        ));
    }
    Ok((rows, answers))
}

/// The group's idempotency keys and deposit references, one array per column. Each row
/// carries its member's last event position, which tells the members apart in what the
/// insert returns.
#[derive(Default)]
struct Rows {
    /// Member index → the position its rows carry, and whether it has a key / reference.
    wanted: HashMap<usize, (i64, bool, bool)>,
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

/// The positions of the reference and key rows an insert wrote.
#[derive(Default)]
struct Written {
    references: HashSet<i64>,
    keys: HashSet<i64>,
}

impl Rows {
    fn add(&mut self, i: usize, m: &Submission, body: &[u8], position: i64) {
        let reference = m.decision.deposit_reference.is_some();
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
        self.wanted
            .insert(i, (position, m.key.is_some(), reference));
    }

    /// Whether member `i` had a key or reference row the insert skipped (taken).
    fn skipped(&self, i: usize, written: &Written) -> bool {
        self.wanted
            .get(&i)
            .is_some_and(|&(position, key, reference)| {
                (key && !written.keys.contains(&position))
                    || (reference && !written.references.contains(&position))
            })
    }

    /// One statement for all of them. A key or reference already taken (committed, or
    /// by an earlier row of this statement) is skipped, after waiting for a transaction
    /// still writing it to end, and left out of what comes back. Rows go in in key order,
    /// so two groups writing overlapping keys lock them in one order (no deadlock).
    async fn write(&self, conn: &mut PgConnection) -> Result<Written, sqlx::Error> {
        if self.r_provider.is_empty() && self.k_client.is_empty() {
            return Ok(Written::default());
        }
        let rows: Vec<(bool, i64)> = sqlx::query_as(
            "WITH reference AS ( \
                 INSERT INTO deposit_references (provider, reference, payment_id, position) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::int8[]) \
                     AS r(provider, reference) ORDER BY provider, reference \
                 ON CONFLICT DO NOTHING RETURNING position \
             ), key AS ( \
                 INSERT INTO idempotency_keys (client, key, request_hash, status, response, position) \
                 SELECT * FROM UNNEST($5::text[], $6::text[], $7::bytea[], $8::int2[], \
                                      $9::bytea[], $10::int8[]) AS k(client, key) \
                     ORDER BY client, key \
                 ON CONFLICT DO NOTHING RETURNING position \
             ) \
             SELECT false, position FROM reference UNION ALL SELECT true, position FROM key",
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
        .fetch_all(conn)
        .await?;
        let mut written = Written::default();
        for (is_key, position) in rows {
            if is_key {
                written.keys.insert(position);
            } else {
                written.references.insert(position);
            }
        }
        Ok(written)
    }
}
