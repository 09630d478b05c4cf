//! The escrow ledger's core: exact money, accounts and double-entry postings, the event
//! envelope, the payment and dispute aggregates (pure: no I/O, time and ids passed in), and
//! beside them the PostgreSQL event store ([`store`]), which knows nothing of what events
//! mean.

pub mod account;
pub mod decode;
pub mod dispute;
pub mod event;
pub mod money;
pub mod payment;
pub mod posting;
pub mod refusal;
pub mod store;

pub use account::{Account, Reference};
pub use event::{ExpectedVersion, FeedPosition, Metadata, NewEvent, RecordedEvent, StreamAppend};
pub use money::{Asset, MoneyError};
pub use posting::Posting;
pub use refusal::RefusalKind;
