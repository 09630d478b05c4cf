//! Projectors: they turn the event store's global feed into finance's read tables, read
//! through the stable views of schema `finance` (`docs/read-views.md`).
//!
//! Rules kept here:
//! - every projector reads the feed in feed order `(tx_id, position)`, in batches, and
//!   commits its checkpoint in the same transaction as its writes: no event is applied
//!   twice and none is skipped, whatever crashes;
//! - one process at a time works a projector (a transaction-scoped advisory lock), so
//!   several processes may run the runner;
//! - payments and disputes are folded through the domain's own `apply` functions, never
//!   re-implemented in SQL;
//! - a projector that finds the ledger inconsistent (a trial balance that is not zero, a
//!   version gap, an event it cannot decode) stops and says why in `projector_state`;
//! - every read table exists twice (sides `a` and `b`): a rebuild fills the idle side,
//!   checks it against the postings rows and repoints the views in one short transaction.

mod balances;
mod bounded;
mod checks;
mod disputes;
mod error;
mod feed;
mod payments;
pub mod rebuild;
pub mod runner;
mod state;

pub mod status;
mod text;

use std::fmt;

use sqlx::PgConnection;

pub use disputes::STATEMENT_BYTES as DISPUTE_STATEMENT_BYTES;
pub use error::ProjectionError;
pub use feed::{read_batch, FeedEvent};
pub use payments::STATEMENT_BYTES as PAYMENT_STATEMENT_BYTES;
pub use rebuild::{rebuild, RebuildError, RebuildReport, RebuildSettings};
pub use runner::{catch_up, follow, step, RunnerSettings, Step};
pub use state::{ProjectorState, Side};
pub use status::{passed, status, wait_for, Passed, ProjectorStatus};

/// The PostgreSQL channel on which appending processes announce committed events.
pub use ledger::store::CHANNEL;

/// A projector and the read tables it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    /// `finance.payments` and `finance.reconciliation_buckets`.
    Payments,
    /// `finance.account_balances`, `finance.balance_history` and `finance.trial_balance`.
    Balances,
    /// `finance.disputes` with its evidence, messages and timeline.
    Disputes,
}

impl Projection {
    /// Every projector.
    pub const ALL: [Projection; 3] = [
        Projection::Payments,
        Projection::Balances,
        Projection::Disputes,
    ];

    /// The projector's name (its row in `projection.projector_state`).
    pub fn name(self) -> &'static str {
        match self {
            Projection::Payments => "payments",
            Projection::Balances => "balances",
            Projection::Disputes => "disputes",
        }
    }

    /// Parses a projector's name, or the name of a read model it owns
    /// (`reconciliation`, `accounts`, `trial-balance`, ...).
    pub fn parse(name: &str) -> Option<Projection> {
        Some(
            match name.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                "payments" | "reconciliation" | "reconciliation_buckets" | "buckets" => {
                    Projection::Payments
                }
                "balances" | "accounts" | "account_balances" | "balance_history"
                | "trial_balance" => Projection::Balances,
                "disputes" | "dispute_queue" => Projection::Disputes,
                _ => return None,
            },
        )
    }

    /// The base names of its read tables (`projection.<base>_<side>`).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Projection::Payments => &["payments", "reconciliation_buckets"],
            Projection::Balances => &["account_balances", "balance_history", "trial_balance"],
            Projection::Disputes => &[
                "disputes",
                "dispute_evidence",
                "dispute_messages",
                "dispute_timeline",
            ],
        }
    }

    /// The views of schema `finance` it feeds.
    pub fn views(self) -> &'static [&'static str] {
        match self {
            Projection::Payments => &["finance.payments", "finance.reconciliation_buckets"],
            Projection::Balances => &[
                "finance.account_balances",
                "finance.balance_history",
                "finance.trial_balance",
            ],
            Projection::Disputes => &[
                "finance.disputes",
                "finance.dispute_evidence",
                "finance.dispute_messages",
                "finance.dispute_timeline",
            ],
        }
    }

    /// Applies a batch of events, in feed order, to this projector's tables on `side`,
    /// inside the caller's transaction.
    ///
    /// # Errors
    /// [`ProjectionError::Halted`] when the batch shows the ledger inconsistent (nothing
    /// must then be committed), or a database error.
    pub async fn apply(
        self,
        conn: &mut PgConnection,
        side: Side,
        events: &[FeedEvent],
    ) -> Result<(), ProjectionError> {
        match self {
            Projection::Payments => payments::apply(conn, side, events).await,
            Projection::Balances => balances::apply(conn, side, events).await,
            Projection::Disputes => disputes::apply(conn, side, events).await,
        }
    }

    /// `projection.<base>_<side>` for one of its tables.
    pub(crate) fn table(base: &str, side: Side) -> String {
        format!("projection.{base}_{}", side.as_str())
    }
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
