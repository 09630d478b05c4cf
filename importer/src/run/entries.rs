//! Ledger entries: each into its payment's stream (or suspense), with the duplicate-webhook
//! check against this batch and the entries of earlier batches.

use std::collections::HashMap;

use bson::oid::ObjectId;
use bson::RawDocumentBuf;
use chrono::Utc;
use ledger::event::NewEvent;
use ledger::payment::{EntryKind, EntryPlacement, PaymentEvent};
use ledger::posting::transfer;
use ledger::ExpectedVersion;
use uuid::Uuid;

use crate::ids::{event_id, Collection};
use crate::legacy::{AnomalyKind, Reject, RejectCode};
use crate::store::{self, BatchWrite, DepositRef, IdMapRow};
use crate::translate::{
    duplicates_of, parse_entry, payment, payment_asset, place_entry, ParsedEntry, PaymentContext,
};

use super::batch::{push_anomalies, reject_row};
use super::{metadata, object_id_of, ImportError, Run};

impl Run<'_> {
    #[allow(clippy::too_many_lines)]
    pub(super) async fn entries_batch(
        &mut self,
        docs: &[RawDocumentBuf],
        write: &mut BatchWrite,
    ) -> Result<(), ImportError> {
        let parsed: Vec<Result<ParsedEntry, Reject>> =
            docs.iter().map(|d| parse_entry(d)).collect();
        let mut hexes: Vec<String> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().and_then(|p| p.payment_hex.clone()))
            .collect();
        hexes.sort();
        hexes.dedup();
        let uuids: Vec<Uuid> = hexes
            .iter()
            .map(|h| Collection::Payments.uuid_of(h))
            .collect();
        let terms = {
            let mut c = self.db.conn().await?;
            store::payment_terms(&mut c, &uuids).await?
        };
        // A retry comes after the import: a payment may have moved on since (see
        // `RejectCode::PaymentMovedOn`), and its entries then stay rejected. The others
        // are appended at the version seen here: a command or freeze landing meanwhile
        // fails the batch (nothing written) rather than slip in before them, and the
        // retry run again finds the payment moved on.
        let mut moved_on = std::collections::HashSet::new();
        let mut seen: HashMap<Uuid, i64> = HashMap::new();
        if self.opts.retry_rejects {
            let mut c = self.db.conn().await?;
            for (id, version, moved) in store::payment_streams(&mut c, &uuids).await? {
                if moved {
                    moved_on.insert(id);
                }
                seen.insert(id, version);
            }
        }
        let mut contexts: HashMap<String, PaymentContext> = HashMap::new();
        let mut unknown = Vec::new();
        for h in &hexes {
            match terms.get(&Collection::Payments.uuid_of(h)) {
                Some(t) => {
                    contexts.insert(h.clone(), PaymentContext::Imported(Box::new(t.clone())));
                }
                None => unknown.push(h.clone()),
            }
        }
        let oids: Vec<ObjectId> = unknown
            .iter()
            .filter_map(|h| ObjectId::parse_str(h).ok())
            .collect();
        for d in self
            .legacy
            .by_ids(Collection::Payments.name(), &oids)
            .await?
        {
            let context = match payment(&d) {
                Ok((imported, _)) => PaymentContext::NotImported(imported.terms.asset),
                Err(r) => PaymentContext::Rejected(r.to_string(), payment_asset(&d)),
            };
            contexts.insert(object_id_of(&d), context);
        }
        // Duplicate candidates: this batch's entries in memory, earlier batches' from
        // PostgreSQL by an indexed lookup, and the batch still committing from memory.
        // (Asking MongoDB for the references made it scan the whole collection for every
        // batch: it has no index on `reference`.)
        let references: Vec<String> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().and_then(|p| p.reference.clone()))
            .collect();
        let mut earlier = {
            let mut c = self.db.conn().await?;
            store::entries_with_references(&mut c, &references).await?
        };
        // The batch still committing is not in PostgreSQL yet, or has just committed: then
        // `earlier` holds its entries twice, and the copies below are deduplicated by id.
        let wanted: std::collections::HashSet<&str> =
            references.iter().map(String::as_str).collect();
        earlier.extend(
            self.uncommitted
                .iter()
                .filter(|r| wanted.contains(r.reference.as_str()))
                .cloned(),
        );
        let candidates: Vec<ParsedEntry> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().filter(|p| p.reference.is_some()).cloned())
            .collect();
        for (raw, p) in docs.iter().zip(parsed) {
            let p = match p {
                Ok(p) => p,
                Err(r) => {
                    write
                        .rejects
                        .push(reject_row(Collection::FundsLedgerEntries, raw, &r));
                    continue;
                }
            };
            let context = p
                .payment_hex
                .as_ref()
                .map(|h| contexts.get(h).cloned().unwrap_or(PaymentContext::Missing));
            let payment_moved_on = p
                .payment_hex
                .as_ref()
                .is_some_and(|h| moved_on.contains(&Collection::Payments.uuid_of(h)));
            let placed = if payment_moved_on {
                Err(Reject::whole(
                    RejectCode::PaymentMovedOn,
                    "its payment has had events since the import (a dispute's freeze or a \
                     live command): legacy money appended now would land after them; move it \
                     with an adjustment",
                ))
            } else {
                place_entry(&p, context.as_ref())
            };
            if let Some(reference) = &p.reference {
                write.references.push(store::EntryReference {
                    object_id: p.source.object_id.clone(),
                    reference: reference.clone(),
                    kind: p.kind.as_str().to_owned(),
                    amount: p.amount,
                    created_at: p.created_at,
                    imported: placed.is_ok(),
                });
            }
            let placed = match placed {
                Ok(placed) => placed,
                Err(r) => {
                    write
                        .rejects
                        .push(reject_row(Collection::FundsLedgerEntries, raw, &r));
                    continue;
                }
            };
            let hex = &p.source.object_id;
            let mut anomalies = placed.anomalies.clone();
            // The copies, this batch's and earlier batches', named in `_id` order whatever
            // order the lookup returned them in: a resumed run words the detail the same.
            let mut copies: Vec<(&str, chrono::DateTime<Utc>, bool)> =
                duplicates_of(&p, &candidates)
                    .into_iter()
                    .map(|o| (o.source.object_id.as_str(), o.created_at, false))
                    .chain(
                        earlier_duplicates(&p, &earlier)
                            .into_iter()
                            .map(|o| (o.object_id.as_str(), o.created_at, o.imported)),
                    )
                    .collect();
            copies.sort_by(|a, b| a.0.cmp(b.0));
            copies.dedup_by(|a, b| a.0 == b.0);
            for (other, at, written_earlier) in copies {
                anomalies.push(duplicate_anomaly(&p, other, at));
                if written_earlier {
                    // The earlier entry was written before this one was read: list it now.
                    let back = duplicate_anomaly(&p, hex, at);
                    push_anomalies(write, Collection::FundsLedgerEntries, other, vec![back]);
                }
            }
            let e = &placed.event;
            let event = NewEvent {
                event_id: event_id(
                    Collection::FundsLedgerEntries,
                    hex,
                    0,
                    "LedgerEntryImported",
                ),
                event_type: "LedgerEntryImported".into(),
                schema_version: 1,
                payload: PaymentEvent::LedgerEntryImported(e.clone()).payload(),
                metadata: metadata(Collection::FundsLedgerEntries, hex, &p.source.digest, 0),
                occurred_at: p.created_at,
                postings: transfer(e.from.clone(), e.to.clone(), e.asset, e.amount).to_vec(),
            };
            if let (EntryKind::Deposit, EntryPlacement::Payment, Some(reference), Some(pid)) =
                (e.kind, e.placement, e.reference.as_ref(), e.payment_id)
            {
                if let Some(PaymentContext::Imported(t)) = &context {
                    write.deposits.push(DepositRef {
                        provider: t.provider.clone(),
                        reference: reference.clone(),
                        payment_id: pid,
                        event_id: event.event_id,
                    });
                }
            }
            let expected = seen
                .get(&placed.stream_id)
                .map_or(ExpectedVersion::Any, |v| ExpectedVersion::Exact(*v));
            write.push_events(placed.stream_id, placed.stream_type, expected, vec![event]);
            write.id_map.push(IdMapRow {
                collection: Collection::FundsLedgerEntries.name(),
                object_id: hex.clone(),
                id: p.entry_id,
                stream_id: placed.stream_id,
                stream_type: placed.stream_type,
                digest: p.source.digest.clone(),
                purchase_request: None,
            });
            push_anomalies(write, Collection::FundsLedgerEntries, hex, anomalies);
        }
        Ok(())
    }
}

/// The duplicate-webhook anomaly of an entry like `p`, naming `other_hex`.
fn duplicate_anomaly(
    p: &ParsedEntry,
    other_hex: &str,
    other_created_at: chrono::DateTime<Utc>,
) -> crate::legacy::Anomaly {
    crate::legacy::Anomaly::new(
        AnomalyKind::DuplicateWebhook,
        format!(
            "same reference {:?}, type and amount as {} ({} s apart)",
            p.reference.as_deref().unwrap_or(""),
            other_hex,
            (other_created_at - p.created_at).num_seconds().abs()
        ),
    )
}

/// The entries of earlier batches that `e` duplicates, by the rule of
/// [`duplicates_of`].
fn earlier_duplicates<'a>(
    e: &ParsedEntry,
    earlier: &'a [store::EntryReference],
) -> Vec<&'a store::EntryReference> {
    let Some(reference) = e.reference.as_deref() else {
        return Vec::new();
    };
    earlier
        .iter()
        .filter(|c| {
            c.object_id != e.source.object_id
                && c.reference == reference
                && c.kind == e.kind.as_str()
                && c.amount == e.amount
                && (c.created_at - e.created_at).abs() < chrono::Duration::minutes(10)
        })
        .collect()
}
