//! The streams being written right now, by a group in flight or by a command running
//! alone beside the groups. A command decided on a stream that is claimed decided on a
//! version about to move: it waits for the claim to go ([`Claims::settled`]) and decides
//! again, instead of racing the writer to a unique-constraint failure that would sink a
//! whole group.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use super::Submission;

/// Claimed streams, and a signal each time some are let go.
#[derive(Debug, Default)]
pub(super) struct Claims {
    streams: Mutex<HashSet<Uuid>>,
    released: Notify,
}

/// Streams held until this drops; dropping lets them go and wakes the waiters.
#[derive(Debug)]
pub(crate) struct Claim {
    claims: Arc<Claims>,
    streams: Vec<Uuid>,
}

impl Claims {
    fn taken(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims every one of `streams`, or none when one is already claimed.
    pub(super) fn try_claim(self: &Arc<Self>, streams: &[Uuid]) -> Option<Claim> {
        let mut taken = self.taken();
        if streams.iter().any(|s| taken.contains(s)) {
            return None;
        }
        taken.extend(streams.iter().copied());
        Some(Claim {
            claims: Arc::clone(self),
            streams: streams.to_vec(),
        })
    }

    /// Splits waiting commands into a group's members, whose streams it claims, and the
    /// busy ones: those naming a stream already claimed, by a group or command in flight
    /// or by an earlier member of this group.
    pub(super) fn claim_group(
        self: &Arc<Self>,
        waiting: Vec<Submission>,
    ) -> (Vec<Submission>, Vec<Submission>, Claim) {
        let mut taken = self.taken();
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
            claims: Arc::clone(self),
            streams,
        };
        (members, busy, claim)
    }

    /// Waits until none of `streams` is claimed, or `limit` has passed.
    pub(super) async fn settled(&self, streams: &[Uuid], limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before looking, so a release between the look and the wait is
            // not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !streams.iter().any(|s| self.taken().contains(s)) {
                return;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.streams.is_empty() {
            return;
        }
        let mut taken = self.claims.taken();
        for s in &self.streams {
            taken.remove(s);
        }
        drop(taken);
        self.claims.released.notify_waiters();
    }
}
