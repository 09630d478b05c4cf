//! The one-shot cutover importer: legacy MongoDB payments, ledger entries and disputes
//! (`legacy-mongo.md`) into the event store as imported history. The translation of
//! documents is pure ([`translate`], over the raw-BSON readers of [`legacy`]); the Mongo
//! reader, the PostgreSQL writer, the run with its checkpoints and report, and `verify`
//! sit around it. Identity is deterministic ([`ids`]), so re-runs write nothing twice.

pub mod check;
pub mod ids;
pub mod legacy;
pub mod mongo;
pub mod progress;
pub mod report;
pub mod run;
pub mod sample;
pub mod store;
pub mod translate;
pub mod verify;

pub use progress::ProgressMode;
pub use report::Report;
pub use run::{import, Domain, ImportError, ImportOptions};
