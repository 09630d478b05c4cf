//! Reading legacy documents as they are: raw BSON, checked before anything is believed.
//! A document holding a key twice, invalid UTF-8, or a BSON type outside the contract
//! (Symbol, Timestamp, MinKey, ...) is rejected whole, at any depth; then fields are read
//! one by one with the exact types `legacy-mongo.md` allows, and anything else is a
//! [`Reject`] with a reason, never a guess. Oddities that still import are [`Anomaly`]s.

mod doc;
pub mod ejson;
pub mod money;
mod reject;

pub use doc::{check_tree, date_from_millis, object_id_time, Doc, Notes};
pub use money::{Amount, AmountSource};
pub use reject::{Anomaly, AnomalyKind, Reject, RejectCode};
