//! Integrity: walks the whole feed, recomputes every event's hash from what is stored,
//! checks each stream's chain and versions and each event's postings, and computes the
//! running digest of the feed. A digest recorded earlier proves that nothing up to its
//! position was changed or removed, the last events of a stream included.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::hash::{digest_step, event_hash, HashInput, GENESIS};
use super::read::read_feed;
use crate::event::FeedPosition;
use crate::money::Asset;

/// One thing wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The stored hash is not the hash of what is stored: the event was altered.
    HashMismatch {
        /// Its position.
        position: i64,
        /// Its stream.
        stream_id: Uuid,
        /// Its version.
        version: i64,
    },
    /// The event does not chain to its stream's previous event, or versions skip.
    BrokenChain {
        /// Its position.
        position: i64,
        /// Its stream.
        stream_id: Uuid,
        /// Its version.
        version: i64,
        /// The version that should have come.
        expected_version: i64,
    },
    /// The event's postings do not sum to zero in an asset.
    Unbalanced {
        /// Its position.
        position: i64,
        /// The asset.
        asset: Asset,
    },
    /// The digest recorded earlier does not match the store up to that position.
    DigestMismatch {
        /// The recorded position.
        position: i64,
    },
    /// The event at the recorded digest's position is gone.
    DigestPositionMissing {
        /// The recorded position.
        position: i64,
    },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::HashMismatch { position, stream_id, version } => write!(
                f,
                "event at position {position} (stream {stream_id} v{version}) was altered: its hash does not match its content"
            ),
            Fault::BrokenChain { position, stream_id, version, expected_version } => write!(
                f,
                "event at position {position} (stream {stream_id} v{version}) breaks its stream's chain: expected v{expected_version} chained to the previous hash"
            ),
            Fault::Unbalanced { position, asset } => {
                write!(f, "postings of the event at position {position} do not sum to zero in {asset}")
            }
            Fault::DigestMismatch { position } => write!(
                f,
                "the store up to position {position} differs from the recorded digest: events were changed or removed"
            ),
            Fault::DigestPositionMissing { position } => write!(
                f,
                "the event at the recorded digest's position {position} is no longer in the store"
            ),
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events walked.
    pub events: u64,
    /// Distinct streams.
    pub streams: u64,
    /// The last position walked (0 for an empty store).
    pub last_position: i64,
    /// The running digest up to `last_position`.
    pub digest: [u8; 32],
    /// Everything wrong, in feed order.
    pub faults: Vec<Fault>,
}

impl VerifyReport {
    /// The digest as `POSITION:HEX`, the form `verify --digest` takes back.
    pub fn digest_text(&self) -> String {
        format!("{}:{}", self.last_position, hex::encode(self.digest))
    }
}

/// Walks the store. `expected` is a digest recorded earlier (`position`, `digest`).
///
/// # Errors
/// A database error (faults in the data are in the report, not errors).
pub async fn verify(
    pool: &PgPool,
    expected: Option<(i64, [u8; 32])>,
) -> Result<VerifyReport, sqlx::Error> {
    let mut heads: HashMap<Uuid, (i64, Vec<u8>)> = HashMap::new();
    let mut report = VerifyReport {
        events: 0,
        streams: 0,
        last_position: 0,
        digest: GENESIS,
        faults: Vec::new(),
    };
    settle(pool).await?;
    let mut expected_seen = false;
    let mut after = FeedPosition::START;
    loop {
        let batch = read_feed(pool, after, 2000).await?;
        let Some(last) = batch.last() else { break };
        after = last.feed_position();
        for e in &batch {
            let computed = event_hash(
                &e.prev_hash,
                &HashInput {
                    stream_id: e.stream_id,
                    stream_type: &e.stream_type,
                    version: e.version,
                    event_id: e.event_id,
                    event_type: &e.event_type,
                    schema_version: e.schema_version,
                    payload: &e.payload,
                    metadata: &e.metadata,
                    occurred_at_micros: e.occurred_at.timestamp_micros(),
                    recorded_at_micros: e.recorded_at.timestamp_micros(),
                    postings: &e.postings,
                },
            );
            if computed.as_slice() != e.hash.as_slice() {
                report.faults.push(Fault::HashMismatch {
                    position: e.position,
                    stream_id: e.stream_id,
                    version: e.version,
                });
            }
            let (prev_version, prev_hash) = heads
                .get(&e.stream_id)
                .cloned()
                .unwrap_or((0, GENESIS.to_vec()));
            if e.version != prev_version + 1 || e.prev_hash != prev_hash {
                report.faults.push(Fault::BrokenChain {
                    position: e.position,
                    stream_id: e.stream_id,
                    version: e.version,
                    expected_version: prev_version + 1,
                });
            }
            heads.insert(e.stream_id, (e.version, e.hash.clone()));
            // Stored postings are the input here: a sum beyond the decimal type is a fault
            // of the store, reported like any imbalance, not a panic.
            let mut sums: BTreeMap<Asset, Option<Decimal>> = BTreeMap::new();
            for p in &e.postings {
                let sum = sums.entry(p.asset).or_insert(Some(Decimal::ZERO));
                *sum = sum.and_then(|s| crate::money::exact_add(s, p.amount));
            }
            for (asset, sum) in sums {
                if !sum.is_some_and(|s| s.is_zero()) {
                    report.faults.push(Fault::Unbalanced {
                        position: e.position,
                        asset,
                    });
                }
            }
            // The digest chains the hashes as computed, never as stored.
            report.digest = digest_step(&report.digest, e.position, &computed);
            report.events += 1;
            report.last_position = e.position;
            if let Some((position, digest)) = expected {
                if e.position == position {
                    expected_seen = true;
                    if report.digest != digest {
                        report.faults.push(Fault::DigestMismatch { position });
                    }
                }
            }
        }
    }
    if let Some((position, _)) = expected {
        if !expected_seen {
            report
                .faults
                .push(Fault::DigestPositionMissing { position });
        }
    }
    report.streams = heads.len() as u64;
    Ok(report)
}

/// Waits (at most 30 s) until every event committed now is below the feed's watermark, so
/// a transaction still running elsewhere in the cluster does not cut the walk short.
async fn settle(pool: &PgPool) -> Result<(), sqlx::Error> {
    let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0)::int8 FROM events")
        .fetch_one(pool)
        .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let held_back: i64 = sqlx::query_scalar(
            "SELECT count(*)::int8 FROM events WHERE position <= $1 \
             AND tx_id >= pg_snapshot_xmin(pg_current_snapshot())",
        )
        .bind(head)
        .fetch_one(pool)
        .await?;
        if held_back == 0 || std::time::Instant::now() >= deadline {
            if held_back > 0 {
                tracing::warn!(
                    held_back,
                    "events held back by running transactions are not verified"
                );
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Parses `POSITION:HEX` as printed by [`VerifyReport::digest_text`].
///
/// # Errors
/// A message saying what is malformed.
pub fn parse_digest(text: &str) -> Result<(i64, [u8; 32]), String> {
    let (pos, hex_text) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not POSITION:HEX"))?;
    let position: i64 = pos
        .parse()
        .map_err(|_| format!("{pos:?} is not a position"))?;
    let bytes = hex::decode(hex_text).map_err(|_| format!("{hex_text:?} is not hex"))?;
    let digest: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a digest is 32 bytes (64 hex digits)".to_owned())?;
    Ok((position, digest))
}
