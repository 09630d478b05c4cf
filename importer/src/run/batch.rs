//! One batch of documents into one batch of writes: the dispatch by collection, the
//! payments (which need no lookups), and the rows every collection shares.

use bson::RawDocumentBuf;
use ledger::event::NewEvent;
use ledger::payment::{PaymentEvent, STREAM_TYPE};
use ledger::ExpectedVersion;

use super::{metadata, object_id_of, ImportError, Run};
use crate::ids::{event_id, Collection};
use crate::legacy::{ejson, Reject, RejectCode};
use crate::report::CollectionReport;
use crate::store::{self, AnomalyRow, BatchWrite, IdMapRow, RejectRow};
use crate::translate::payment;

impl Run<'_> {
    pub(super) async fn process(
        &mut self,
        collection: Collection,
        docs: &[RawDocumentBuf],
        retry: bool,
        figures: &mut CollectionReport,
    ) -> Result<BatchWrite, ImportError> {
        let mut write = BatchWrite::default();
        match collection {
            Collection::Payments => {
                payments_batch(docs, &mut write);
                if retry || self.entries_started {
                    self.keep_payments_with_suspense_entries(docs, &mut write)
                        .await?;
                }
            }
            Collection::FundsLedgerEntries => self.entries_batch(docs, &mut write).await?,
            Collection::Disputes => self.disputes_batch(docs, &mut write).await?,
            _ => {}
        }
        figures.rejected += write.rejects.len() as u64;
        figures.imported += write.id_map.len() as u64;
        if retry {
            write.resolved = write
                .id_map
                .iter()
                .map(|r| (r.collection, r.object_id.clone()))
                .collect();
        }
        Ok(write)
    }

    /// A retried payment whose ledger entries were imported while it was rejected stays
    /// rejected (`entries_in_suspense`), and so does a payment read for the first time by a
    /// run after the entries pass began (written in MongoDB during an import, its entries
    /// read before it). Those entries sit on their own streams, their
    /// money in `escrow:<payment>` and `platform:suspense`: a payment imported now would
    /// have a history holding nothing while its escrow account holds that money. The way
    /// out is an adjustment out of suspense, or a fresh import (`docs/import.md`).
    pub(super) async fn keep_payments_with_suspense_entries(
        &mut self,
        docs: &[RawDocumentBuf],
        write: &mut BatchWrite,
    ) -> Result<(), ImportError> {
        let payments: Vec<uuid::Uuid> = write.appends.iter().map(|a| a.stream_id).collect();
        if payments.is_empty() {
            return Ok(());
        }
        let accounts: Vec<String> = payments
            .iter()
            .map(|p| ledger::Account::Escrow(*p).to_string())
            .collect();
        // Its escrow account's postings, and its entries imported on streams of their own
        // (a payout or an adjustment of a party's share leaves no posting that names it).
        let mut held: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        {
            let mut c = self.db.conn().await?;
            for (account, postings) in store::postings_of_accounts(&mut c, &accounts).await? {
                *held.entry(account).or_default() += postings;
            }
            for (payment, entries) in store::entries_in_suspense(&mut c, &payments).await? {
                held.entry(ledger::Account::Escrow(payment).to_string())
                    .or_insert(entries);
            }
        }
        for (account, postings) in held {
            let Some(a) = write
                .appends
                .iter()
                .position(|a| ledger::Account::Escrow(a.stream_id).to_string() == account)
            else {
                continue;
            };
            let stream_id = write.appends.remove(a).stream_id;
            let Some(m) = write.id_map.iter().position(|r| r.id == stream_id) else {
                continue;
            };
            let hex = write.id_map.remove(m).object_id;
            write.anomalies.retain(|r| r.object_id != hex);
            if let Some(raw) = docs.iter().find(|d| object_id_of(d) == hex) {
                let why = Reject::whole(
                    RejectCode::EntriesInSuspense,
                    format!(
                        "its ledger entries were imported while it was rejected ({postings} \
                         postings in {account}, or entries on streams of their own, their \
                         other sides in platform:suspense); move them with an adjustment out \
                         of suspense, or import into a fresh database"
                    ),
                );
                write
                    .rejects
                    .push(reject_row(Collection::Payments, raw, &why));
            }
        }
        Ok(())
    }
}

/// Translates a batch of payments (no lookups needed).
fn payments_batch(docs: &[RawDocumentBuf], write: &mut BatchWrite) {
    for raw in docs {
        match payment(raw) {
            Ok((imported, source)) => {
                let hex = source.object_id.clone();
                let id = imported.terms.payment_id;
                let purchase_request = imported
                    .terms
                    .purchase_request
                    .as_ref()
                    .map(ledger::Reference::account_key);
                let event = PaymentEvent::PaymentImported(imported.clone());
                write.push_events(
                    id,
                    STREAM_TYPE,
                    ExpectedVersion::NoStream,
                    vec![NewEvent {
                        event_id: event_id(Collection::Payments, &hex, 0, "PaymentImported"),
                        event_type: "PaymentImported".into(),
                        schema_version: 1,
                        payload: event.payload(),
                        metadata: metadata(Collection::Payments, &hex, &source.digest, 0),
                        occurred_at: imported.created_at,
                        postings: Vec::new(),
                    }],
                );
                write.id_map.push(IdMapRow {
                    collection: Collection::Payments.name(),
                    object_id: hex.clone(),
                    id,
                    stream_id: id,
                    stream_type: STREAM_TYPE,
                    digest: source.digest.clone(),
                    purchase_request,
                });
                push_anomalies(write, Collection::Payments, &hex, source.anomalies);
            }
            Err(r) => write
                .rejects
                .push(reject_row(Collection::Payments, raw, &r)),
        }
    }
}

pub(super) fn push_anomalies(
    write: &mut BatchWrite,
    collection: Collection,
    hex: &str,
    anomalies: Vec<crate::legacy::Anomaly>,
) {
    for anomaly in anomalies {
        // One row per kind and document: merge the details of repeats.
        if let Some(row) = write.anomalies.iter_mut().find(|r| {
            r.object_id == hex
                && r.anomaly.kind == anomaly.kind
                && r.collection == collection.name()
        }) {
            row.anomaly.detail.push_str("; ");
            row.anomaly.detail.push_str(&anomaly.detail);
        } else {
            write.anomalies.push(AnomalyRow {
                collection: collection.name(),
                object_id: hex.to_owned(),
                anomaly,
            });
        }
    }
}

pub(super) fn reject_row(collection: Collection, raw: &RawDocumentBuf, r: &Reject) -> RejectRow {
    let ejson = ejson::text(&ejson::lossy(raw));
    RejectRow {
        collection: collection.name(),
        object_id: object_id_of(raw),
        code: r.code.as_str().into(),
        field: r.field.clone(),
        reason: r.to_string().replace('\0', "\u{fffd}"),
        raw_ejson: ejson,
        raw_bson: raw.as_bytes().to_vec(),
        purchase_request: if collection == Collection::Payments {
            crate::translate::purchase_request_key(raw)
        } else {
            None
        },
    }
}
