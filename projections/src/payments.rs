//! The payments projector: folds each payment stream through `Payment::apply` (the
//! aggregate's own fold), keeps the fold's state in `projection.payments_<side>` column by
//! column, and in the same transaction moves the payment between reconciliation buckets
//! (provider, status, asset, UTC day of creation), so bucket sums always equal sums over
//! the payments table.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use ledger::money::exact_add;
use ledger::payment::{EntryKind, Payment, PaymentCreated, PaymentEvent, STREAM_TYPE};
use ledger::Asset;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::feed::FeedEvent;
use crate::text::{parse_enum, parse_reference, reference_key};
use crate::{Projection, ProjectionError, Side};

mod fill;
mod write;

pub use write::STATEMENT_BYTES;

pub(crate) use fill::Fill;

const NAME: &str = "payments";

/// A row of `projection.payments_<side>`: the payment's fold state and when each step
/// happened.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
struct PaymentRow {
    payment_id: Uuid,
    version: i64,
    status: String,
    asset: String,
    provider: String,
    buyer: String,
    seller: String,
    purchase_request: Option<String>,
    seller_offer: Option<String>,
    metadata: Option<Value>,
    amount: Decimal,
    deposited: Decimal,
    excess: Decimal,
    excess_held: Decimal,
    held: Decimal,
    released: Decimal,
    refunded: Decimal,
    fees: Decimal,
    aml_fees: Decimal,
    seller_share: Decimal,
    buyer_share: Decimal,
    paid_out_seller: Decimal,
    paid_out_buyer: Decimal,
    escrow_adjusted: Decimal,
    open_dispute_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    funded_at: Option<DateTime<Utc>>,
    released_at: Option<DateTime<Utc>>,
    refunded_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    disputed_at: Option<DateTime<Utc>>,
    paid_out_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    last_position: i64,
    created_tx: i64,
    created_position: i64,
}

/// What the projector keeps beside the aggregate's state.
#[derive(Debug, Clone, Default)]
struct Extra {
    disputed_at: Option<DateTime<Utc>>,
    paid_out_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    last_position: i64,
    /// The creation event's place in the feed (transaction, position): the order pages
    /// of payments follow, since rows become visible in it.
    created: Option<(i64, i64)>,
}

impl PaymentRow {
    /// The aggregate's state this row holds.
    fn to_state(&self) -> Result<(Payment, Extra), String> {
        let terms = PaymentCreated {
            payment_id: self.payment_id,
            buyer: parse_reference("buyer", &self.buyer)?,
            seller: parse_reference("seller", &self.seller)?,
            purchase_request: self
                .purchase_request
                .as_deref()
                .map(|k| parse_reference("purchase_request", k))
                .transpose()?,
            seller_offer: self
                .seller_offer
                .as_deref()
                .map(|k| parse_reference("seller_offer", k))
                .transpose()?,
            amount: self.amount,
            asset: self
                .asset
                .parse::<Asset>()
                .map_err(|e| format!("column asset: {e}"))?,
            provider: self.provider.clone(),
            metadata: self.metadata.clone(),
        };
        let payment = Payment {
            terms: Some(terms),
            status: parse_enum("status", &self.status)?,
            deposited: self.deposited,
            excess: self.excess,
            excess_held: self.excess_held,
            held: self.held,
            released: self.released,
            refunded: self.refunded,
            fees: self.fees,
            aml_fees: self.aml_fees,
            seller_share: self.seller_share,
            buyer_share: self.buyer_share,
            paid_out_seller: self.paid_out_seller,
            paid_out_buyer: self.paid_out_buyer,
            escrow_adjusted: self.escrow_adjusted,
            frozen_by: self.open_dispute_id,
            created_at: Some(self.created_at),
            funded_at: self.funded_at,
            released_at: self.released_at,
            refunded_at: self.refunded_at,
            cancelled_at: self.cancelled_at,
            version: self.version,
        };
        let extra = Extra {
            disputed_at: self.disputed_at,
            paid_out_at: self.paid_out_at,
            updated_at: Some(self.updated_at),
            last_position: self.last_position,
            created: Some((self.created_tx, self.created_position)),
        };
        Ok((payment, extra))
    }

    /// The row for a folded state.
    fn from_state(id: Uuid, p: &Payment, extra: &Extra) -> Result<PaymentRow, String> {
        let Some(terms) = &p.terms else {
            return Err(format!(
                "payment stream {id} has events but no PaymentCreated before them"
            ));
        };
        let (Some(created_at), Some(updated_at), Some((created_tx, created_position))) =
            (p.created_at, extra.updated_at, extra.created)
        else {
            return Err(format!("payment {id} has no creation time"));
        };
        Ok(PaymentRow {
            payment_id: terms.payment_id,
            version: p.version,
            status: p.status.as_str().to_owned(),
            asset: terms.asset.code().to_owned(),
            provider: terms.provider.clone(),
            buyer: reference_key(&terms.buyer),
            seller: reference_key(&terms.seller),
            purchase_request: terms.purchase_request.as_ref().map(reference_key),
            seller_offer: terms.seller_offer.as_ref().map(reference_key),
            metadata: terms.metadata.clone().filter(|m| !m.is_null()),
            amount: terms.amount,
            deposited: p.deposited,
            excess: p.excess,
            excess_held: p.excess_held,
            held: p.held,
            released: p.released,
            refunded: p.refunded,
            fees: p.fees,
            aml_fees: p.aml_fees,
            seller_share: p.seller_share,
            buyer_share: p.buyer_share,
            paid_out_seller: p.paid_out_seller,
            paid_out_buyer: p.paid_out_buyer,
            escrow_adjusted: p.escrow_adjusted,
            open_dispute_id: p.frozen_by,
            created_at,
            funded_at: p.funded_at,
            released_at: p.released_at,
            refunded_at: p.refunded_at,
            cancelled_at: p.cancelled_at,
            disputed_at: extra.disputed_at,
            paid_out_at: extra.paid_out_at,
            updated_at,
            last_position: extra.last_position,
            created_tx,
            created_position,
        })
    }
}

/// The bucket a folded payment counts in: none before its creation.
fn bucket_key(p: &Payment) -> Option<BucketKey> {
    let terms = p.terms.as_ref()?;
    Some(BucketKey {
        provider: terms.provider.clone(),
        status: p.status.as_str(),
        asset: terms.asset.code(),
        day: p.created_at?.date_naive(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct BucketKey {
    provider: String,
    status: &'static str,
    asset: &'static str,
    day: NaiveDate,
}

/// A change of one bucket's count and sums (also the row shape for the upsert).
#[derive(Debug, Clone, Default, Serialize)]
struct BucketDelta {
    provider: String,
    status: String,
    asset: String,
    day: Option<NaiveDate>,
    payments: i64,
    amount: Decimal,
    deposited: Decimal,
    excess: Decimal,
    held: Decimal,
    released: Decimal,
    refunded: Decimal,
    fees: Decimal,
    aml_fees: Decimal,
    paid_out: Decimal,
}

impl BucketDelta {
    /// Adds (`sign` = 1) or removes (`sign` = -1) a payment's contribution.
    fn add(&mut self, p: &Payment, amount: Decimal, sign: i64) -> Option<()> {
        let s = Decimal::from(sign);
        // Exact or refused: `checked_add` alone drops fractional digits once a bucket's
        // sum outgrows the 96-bit mantissa (18-decimal ETH past about 7.9 * 10^10).
        let add = |acc: &mut Decimal, v: Decimal| -> Option<()> {
            *acc = exact_add(*acc, v.checked_mul(s)?)?;
            Some(())
        };
        self.payments += sign;
        add(&mut self.amount, amount)?;
        add(&mut self.deposited, p.deposited)?;
        add(&mut self.excess, p.excess)?;
        add(&mut self.held, p.held)?;
        add(&mut self.released, p.released)?;
        add(&mut self.refunded, p.refunded)?;
        add(&mut self.fees, p.fees)?;
        add(&mut self.aml_fees, p.aml_fees)?;
        add(
            &mut self.paid_out,
            exact_add(p.paid_out_seller, p.paid_out_buyer)?,
        )?;
        Some(())
    }

    /// Writes every sum with at least `scale` decimals (the asset's), so that a bucket's
    /// figures print the same whichever batches built them: numeric addition keeps the
    /// larger scale, and a bucket's history of additions and removals depends on where
    /// batches began. Never rounds: a sum already finer is left as it is.
    fn pad_to(&mut self, scale: u32) {
        for v in [
            &mut self.amount,
            &mut self.deposited,
            &mut self.excess,
            &mut self.held,
            &mut self.released,
            &mut self.refunded,
            &mut self.fees,
            &mut self.aml_fees,
            &mut self.paid_out,
        ] {
            if v.scale() < scale {
                v.rescale(scale);
            }
        }
    }

    fn is_nothing(&self) -> bool {
        self.payments == 0
            && [
                self.amount,
                self.deposited,
                self.excess,
                self.held,
                self.released,
                self.refunded,
                self.fees,
                self.aml_fees,
                self.paid_out,
            ]
            .iter()
            .all(Decimal::is_zero)
    }
}

/// Applies a batch to `projection.payments_<side>` and `reconciliation_buckets_<side>`.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    side: Side,
    events: &[FeedEvent],
) -> Result<(), ProjectionError> {
    let (ours, ids) = payment_events(events);
    if ours.is_empty() {
        return Ok(());
    }
    let halt = |reason: String| ProjectionError::halt(NAME, reason);
    let table = Projection::table("payments", side);

    let before: Vec<PaymentRow> =
        sqlx::query_as(&format!("SELECT * FROM {table} WHERE payment_id = ANY($1)"))
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    let mut states: HashMap<Uuid, (Payment, Extra)> = HashMap::with_capacity(ids.len());
    for row in &before {
        states.insert(row.payment_id, row.to_state().map_err(&halt)?);
    }
    let mut buckets = BTreeMap::new();
    add_to_buckets(&mut buckets, states.values().map(|(p, _)| p), -1)?;

    for e in &ours {
        let (payment, extra) = states.entry(e.stream_id).or_default();
        fold(payment, extra, e)?;
    }

    let mut after = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some((payment, extra)) = states.get(id) {
            after.push(PaymentRow::from_state(*id, payment, extra).map_err(&halt)?);
        }
    }

    add_to_buckets(&mut buckets, states.values().map(|(p, _)| p), 1)?;
    let deltas = bucket_rows(buckets);

    sqlx::query(&format!("DELETE FROM {table} WHERE payment_id = ANY($1)"))
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    write::insert_rows(conn, &table, &after).await?;
    write_buckets(conn, side, &deltas).await?;
    Ok(())
}

/// A batch's payment events, in feed order, and their streams (sorted, once each).
fn payment_events(events: &[FeedEvent]) -> (Vec<&FeedEvent>, Vec<Uuid>) {
    let ours: Vec<&FeedEvent> = events
        .iter()
        .filter(|e| e.stream_type == STREAM_TYPE)
        .collect();
    let mut ids: Vec<Uuid> = ours.iter().map(|e| e.stream_id).collect();
    ids.sort_unstable();
    ids.dedup();
    (ours, ids)
}

/// Folds one event of a payment's stream into its state, checking it comes next.
fn fold(payment: &mut Payment, extra: &mut Extra, e: &FeedEvent) -> Result<(), ProjectionError> {
    let halt = |reason: String| ProjectionError::halt(NAME, reason);
    if e.version != payment.version + 1 {
        return Err(halt(format!(
            "payment {} is at version {} but the next event in the feed (position {}) has version {}",
            e.stream_id, payment.version, e.position, e.version
        )));
    }
    let event =
        PaymentEvent::decode(&e.event_type, e.schema_version, &e.payload).map_err(|err| {
            halt(format!(
                "event at position {} does not decode: {err}",
                e.position
            ))
        })?;
    payment.try_apply(&event, e.occurred_at).map_err(|err| {
        halt(format!(
            "event at position {} cannot be folded exactly: {err}",
            e.position
        ))
    })?;
    payment.version = e.version;
    if let Some(terms) = payment
        .terms
        .as_ref()
        .filter(|t| t.payment_id != e.stream_id)
    {
        // Its row is keyed by the terms' id: the stream's next event would not find it.
        return Err(halt(format!(
            "payment stream {} was created with payment_id {} (position {})",
            e.stream_id, terms.payment_id, e.position
        )));
    }
    match event {
        PaymentEvent::EscrowFrozen(_) => extra.disputed_at = Some(e.occurred_at),
        PaymentEvent::PayoutMade(_) => extra.paid_out_at = Some(e.occurred_at),
        PaymentEvent::LedgerEntryImported(x) if x.kind == EntryKind::Payout => {
            extra.paid_out_at = Some(e.occurred_at);
        }
        _ => {}
    }
    extra.updated_at = Some(e.occurred_at);
    extra.last_position = e.position;
    if e.version == 1 {
        extra.created = Some((e.tx_id, e.position));
    }
    Ok(())
}

/// Adds (`sign` = 1) or removes (`sign` = -1) each folded payment's contribution to its
/// bucket.
fn add_to_buckets<'a>(
    buckets: &mut BTreeMap<BucketKey, BucketDelta>,
    payments: impl IntoIterator<Item = &'a Payment>,
    sign: i64,
) -> Result<(), ProjectionError> {
    for p in payments {
        let (Some(key), Some(terms)) = (bucket_key(p), p.terms.as_ref()) else {
            return Err(ProjectionError::halt(
                NAME,
                "a payment stream has events but no PaymentCreated before them",
            ));
        };
        let amount = terms.amount;
        buckets
            .entry(key)
            .or_default()
            .add(p, amount, sign)
            .ok_or_else(|| {
                ProjectionError::halt(
                    NAME,
                    "a reconciliation bucket's sum needs more digits than a decimal holds exactly (refused, not rounded)",
                )
            })?;
    }
    Ok(())
}

/// The bucket changes worth writing, as rows for [`write_buckets`].
fn bucket_rows(buckets: BTreeMap<BucketKey, BucketDelta>) -> Vec<BucketDelta> {
    buckets
        .into_iter()
        .map(|(k, mut d)| {
            d.provider = k.provider;
            k.status.clone_into(&mut d.status);
            k.asset.clone_into(&mut d.asset);
            d.day = Some(k.day);
            if let Ok(asset) = k.asset.parse::<Asset>() {
                d.pad_to(asset.scale());
            }
            d
        })
        .filter(|d| !d.is_nothing())
        .collect()
}

async fn write_buckets(
    conn: &mut PgConnection,
    side: Side,
    deltas: &[BucketDelta],
) -> Result<(), ProjectionError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let table = Projection::table("reconciliation_buckets", side);
    let emptied: Vec<(String, String, String, NaiveDate)> = sqlx::query_as(&format!(
        "INSERT INTO {table} AS b \
         SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1) \
         ON CONFLICT (provider, status, asset, day) DO UPDATE SET \
             payments = b.payments + excluded.payments, \
             amount = b.amount + excluded.amount, \
             deposited = b.deposited + excluded.deposited, \
             excess = b.excess + excluded.excess, \
             held = b.held + excluded.held, \
             released = b.released + excluded.released, \
             refunded = b.refunded + excluded.refunded, \
             fees = b.fees + excluded.fees, \
             aml_fees = b.aml_fees + excluded.aml_fees, \
             paid_out = b.paid_out + excluded.paid_out \
         RETURNING provider, status, asset, day, payments"
    ))
    .bind(sqlx::types::Json(deltas))
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .filter_map(
        |(p, s, a, d, n): (String, String, String, NaiveDate, i64)| {
            (n == 0).then_some((p, s, a, d))
        },
    )
    .collect();
    if emptied.is_empty() {
        return Ok(());
    }
    // A bucket no payment is in any more is removed, so that an incremental run and a
    // rebuild leave the same rows.
    let (p, s, a, d): (Vec<_>, Vec<_>, Vec<_>, Vec<_>) = emptied.into_iter().fold(
        (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
        |mut acc, (p, s, a, d)| {
            acc.0.push(p);
            acc.1.push(s);
            acc.2.push(a);
            acc.3.push(d);
            acc
        },
    );
    sqlx::query(&format!(
        "DELETE FROM {table} b USING unnest($1::text[], $2::text[], $3::text[], $4::date[]) \
             AS k(provider, status, asset, day) \
         WHERE (b.provider, b.status, b.asset, b.day) = (k.provider, k.status, k.asset, k.day) \
           AND b.payments = 0"
    ))
    .bind(&p)
    .bind(&s)
    .bind(&a)
    .bind(&d)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::payment::FundsDeposited;
    use ledger::Reference;

    fn created() -> PaymentCreated {
        PaymentCreated {
            payment_id: Uuid::new_v4(),
            buyer: Reference::entity(Uuid::new_v4()),
            seller: Reference::external("shop 7"),
            purchase_request: Some(Reference::entity(Uuid::new_v4())),
            seller_offer: None,
            amount: Decimal::new(10_000, 2),
            asset: Asset::Usd,
            provider: "stripe".into(),
            metadata: Some(serde_json::json!({"k": 1})),
        }
    }

    #[test]
    fn a_bucket_refuses_a_sum_it_could_only_round() {
        let mut terms = created();
        terms.asset = Asset::Eth;
        terms.amount = Decimal::from_str_exact("49999999999.999999999999999999").unwrap();
        let amount = terms.amount;
        let mut p = Payment::default();
        p.apply(&PaymentEvent::PaymentCreated(terms), Utc::now());
        let mut bucket = BucketDelta::default();
        assert_eq!(bucket.add(&p, amount, 1), Some(()));
        assert_eq!(bucket.amount, amount);
        // A second such payment needs a mantissa past 2^96: refused, not rounded.
        assert_eq!(bucket.add(&p, amount, 1), None);
    }

    #[test]
    fn a_folded_payment_survives_its_row() {
        let terms = created();
        let id = terms.payment_id;
        let now = Utc::now();
        let mut p = Payment::default();
        p.apply(&PaymentEvent::PaymentCreated(terms), now);
        p.apply(
            &PaymentEvent::FundsDeposited(FundsDeposited {
                amount: Decimal::new(12_000, 2),
                reference: "r".into(),
                allow_excess: true,
                excess: Decimal::new(2_000, 2),
            }),
            now,
        );
        let extra = Extra {
            updated_at: Some(now),
            last_position: 9,
            created: Some((7, 1)),
            ..Extra::default()
        };
        let row = PaymentRow::from_state(id, &p, &extra).unwrap();
        let (back, back_extra) = row.to_state().unwrap();
        assert_eq!(back, p);
        assert_eq!(back_extra.last_position, 9);
        assert_eq!(row.status, "funded");
    }

    #[test]
    fn a_payment_without_terms_is_refused() {
        let p = Payment::default();
        assert!(PaymentRow::from_state(Uuid::nil(), &p, &Extra::default()).is_err());
    }
}
