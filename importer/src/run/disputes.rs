//! Disputes: each found by its payment (by `paymentId`, else by `purchaseRequestId`).

use std::collections::HashMap;

use bson::oid::ObjectId;
use bson::RawDocumentBuf;
use ledger::event::NewEvent;
use ledger::payment::{PaymentCreated, STREAM_TYPE};
use ledger::ExpectedVersion;
use uuid::Uuid;

use crate::check::fold_payments;
use crate::ids::{event_id, Collection};
use crate::legacy::{AnomalyKind, Reject, RejectCode};
use crate::store::{self, BatchWrite, IdMapRow};
use crate::translate::{finish_dispute, parse_dispute, payment, DisputePayment};

use super::batch::{push_anomalies, reject_row};
use super::{metadata, object_id_of, ImportError, Run};

impl Run<'_> {
    #[allow(clippy::too_many_lines)]
    pub(super) async fn disputes_batch(
        &mut self,
        docs: &[RawDocumentBuf],
        write: &mut BatchWrite,
    ) -> Result<(), ImportError> {
        let parsed: Vec<_> = docs.iter().map(|d| parse_dispute(d)).collect();
        // Find each dispute's payment: by paymentId, else by purchaseRequestId.
        let mut found: Vec<Result<Uuid, Reject>> = Vec::with_capacity(parsed.len());
        for p in &parsed {
            let Ok(p) = p else {
                found.push(Err(Reject::whole(RejectCode::MalformedBson, "")));
                continue;
            };
            let result = if let Some(h) = &p.payment_hex {
                Ok(Collection::Payments.uuid_of(h))
            } else if let Some(pr) = &p.imported.purchase_request {
                let mut c = self.db.conn().await?;
                let (imported, rejected) =
                    store::payments_of_purchase_request(&mut c, &pr.account_key()).await?;
                match (imported.as_slice(), rejected) {
                    ([one], 0) => Ok(*one),
                    ([], 0) => Err(Reject::at(
                        RejectCode::PaymentNotFound,
                        "purchaseRequestId",
                        "no paymentId and no legacy payment has this purchaseRequestId",
                    )),
                    ([], 1) => Err(Reject::at(
                        RejectCode::PaymentNotImported,
                        "purchaseRequestId",
                        "no paymentId and the one payment with this purchaseRequestId was rejected",
                    )),
                    (found, rejected) => Err(Reject::at(
                        RejectCode::AmbiguousPayment,
                        "purchaseRequestId",
                        format!(
                            "no paymentId and several payments have this purchaseRequestId ({} imported, {rejected} rejected)",
                            found.len()
                        ),
                    )),
                }
            } else {
                Err(Reject::at(
                    RejectCode::PaymentNotFound,
                    "paymentId",
                    "neither paymentId nor purchaseRequestId",
                ))
            };
            found.push(result);
        }
        let ids: Vec<Uuid> = found
            .iter()
            .filter_map(|f| f.as_ref().ok().copied())
            .collect();
        let (terms, mut states) = {
            let mut c = self.db.conn().await?;
            let terms: HashMap<Uuid, PaymentCreated> = store::payment_terms(&mut c, &ids).await?;
            let states = fold_payments(&mut c, &ids).await?;
            (terms, states)
        };
        // Payments named by paymentId but not imported: rejected, or absent from MongoDB.
        let missing: Vec<ObjectId> = parsed
            .iter()
            .zip(&found)
            .filter_map(|(p, f)| match (p, f) {
                (Ok(p), Ok(id)) if !terms.contains_key(id) => p
                    .payment_hex
                    .as_deref()
                    .and_then(|h| ObjectId::parse_str(h).ok()),
                _ => None,
            })
            .collect();
        let mut in_mongo: HashMap<String, String> = HashMap::new();
        for d in self
            .legacy
            .by_ids(Collection::Payments.name(), &missing)
            .await?
        {
            let why = match payment(&d) {
                Ok(_) => "it was not imported".to_owned(),
                Err(r) => format!("it was rejected: {r}"),
            };
            in_mongo.insert(object_id_of(&d), why);
        }
        for ((raw, p), f) in docs.iter().zip(parsed).zip(found) {
            let p = match p {
                Ok(p) => p,
                Err(r) => {
                    write
                        .rejects
                        .push(reject_row(Collection::Disputes, raw, &r));
                    continue;
                }
            };
            let finished = f.and_then(|payment_id| {
                let t = terms.get(&payment_id).ok_or_else(|| {
                    let hex = p.payment_hex.clone().unwrap_or_default();
                    match in_mongo.get(&hex) {
                        Some(why) => Reject::at(
                            RejectCode::PaymentNotImported,
                            "paymentId",
                            format!("payment {hex}: {why}"),
                        ),
                        None => Reject::at(
                            RejectCode::PaymentNotFound,
                            "paymentId",
                            format!("payment {hex} does not exist"),
                        ),
                    }
                })?;
                finish_dispute(
                    &p,
                    DisputePayment {
                        payment_id,
                        asset: t.asset,
                        by_purchase_request: p.payment_hex.is_none(),
                    },
                )
            });
            let (imported, mut anomalies) = match finished {
                Ok(x) => x,
                Err(r) => {
                    write
                        .rejects
                        .push(reject_row(Collection::Disputes, raw, &r));
                    continue;
                }
            };
            let hex = p.source.object_id.clone();
            let payment_id = imported.opened.payment_id;
            let dispute_id = p.dispute_id;
            let event = ledger::dispute::DisputeEvent::DisputeImported(imported.clone());
            write.push_events(
                dispute_id,
                ledger::dispute::STREAM_TYPE,
                ExpectedVersion::NoStream,
                vec![NewEvent {
                    event_id: event_id(Collection::Disputes, &hex, 0, "DisputeImported"),
                    event_type: "DisputeImported".into(),
                    schema_version: 1,
                    payload: event.payload(),
                    metadata: metadata(Collection::Disputes, &hex, &p.source.digest, 0),
                    occurred_at: imported.created_at,
                    postings: Vec::new(),
                }],
            );
            if !imported.status.is_terminal() {
                let state = states.entry(payment_id).or_default();
                match state.payment.freeze_imported(dispute_id) {
                    Ok(events) => {
                        for e in &events {
                            state.payment.apply(e, imported.created_at);
                        }
                        let frozen = &events[0];
                        write.push_events(
                            payment_id,
                            STREAM_TYPE,
                            ExpectedVersion::Any,
                            vec![NewEvent {
                                event_id: event_id(Collection::Disputes, &hex, 1, "EscrowFrozen"),
                                event_type: "EscrowFrozen".into(),
                                schema_version: 1,
                                payload: frozen.payload(),
                                metadata: metadata(Collection::Disputes, &hex, &p.source.digest, 1),
                                occurred_at: imported.created_at,
                                postings: Vec::new(),
                            }],
                        );
                    }
                    Err(e) => anomalies.push(crate::legacy::Anomaly::new(
                        AnomalyKind::OpenDisputeNotFrozen,
                        format!("payment {payment_id} could not be frozen: {e}"),
                    )),
                }
            }
            write.id_map.push(IdMapRow {
                collection: Collection::Disputes.name(),
                object_id: hex.clone(),
                id: dispute_id,
                stream_id: dispute_id,
                stream_type: ledger::dispute::STREAM_TYPE,
                digest: p.source.digest.clone(),
                purchase_request: None,
            });
            push_anomalies(write, Collection::Disputes, &hex, anomalies);
        }
        Ok(())
    }
}
