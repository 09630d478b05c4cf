//! Synthetic legacy collections for `escrow-ledger bench import`: payments (3 ledger
//! entries each) and disputes (one per 10 payments) of the shapes of `legacy-mongo.md`,
//! mostly clean (`Decimal128` amounts, a few as strings or doubles, a few odd references
//! and a rare reject), deterministic from their index so a re-run loads the same bytes;
//! their loading; and the plain sorted scan the import is measured against (the source's
//! limit: the same driver, the same `_id` order and batch size, documents only counted).
//! It lives here because `bson` and `mongodb` belong to this crate alone.

use std::time::Instant;

use bson::oid::ObjectId;
use bson::{doc, rawdoc, Decimal128, RawArrayBuf, RawBson, RawDocumentBuf};

use crate::mongo::{Legacy, MongoError};

/// The collections the benchmark loads, in import order.
pub const COLLECTIONS: [&str; 3] = ["payments", "fundsledgerentries", "disputes"];

/// Ledger entries per payment.
pub const ENTRIES_PER_PAYMENT: u64 = 3;

/// Payments per dispute.
pub const PAYMENTS_PER_DISPUTE: u64 = 10;

/// 2021-01-01T00:00:00Z: the first payment's time.
const BASE: u64 = 1_609_459_200;

/// Tags in the `_id`s, so the collections and the referenced users never share one.
const PAYMENT: u8 = 1;
const ENTRY: u8 = 2;
const DISPUTE: u8 = 3;
const USER: u8 = 4;
const REQUEST: u8 = 5;
const OFFER: u8 = 6;
const CHAT: u8 = 7;
const SUB: u8 = 8;

/// How many documents each collection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sizes {
    /// `payments`.
    pub payments: u64,
    /// `fundsledgerentries`.
    pub entries: u64,
    /// `disputes`.
    pub disputes: u64,
}

impl Sizes {
    /// The sizes for `payments` payments.
    pub fn for_payments(payments: u64) -> Sizes {
        Sizes {
            payments,
            entries: payments * ENTRIES_PER_PAYMENT,
            disputes: payments / PAYMENTS_PER_DISPUTE,
        }
    }

    /// The size of collection `name` (one of [`COLLECTIONS`]).
    pub fn of(&self, name: &str) -> u64 {
        match name {
            "payments" => self.payments,
            "fundsledgerentries" => self.entries,
            "disputes" => self.disputes,
            _ => 0,
        }
    }

    /// Every document.
    pub fn total(&self) -> u64 {
        self.payments + self.entries + self.disputes
    }
}

/// An `_id` made at `secs` after [`BASE`]: ordered by time, then by `n`.
fn oid(tag: u8, n: u64, secs: u64) -> ObjectId {
    let ts = u32::try_from(BASE + secs).unwrap_or(u32::MAX).to_be_bytes();
    let n = n.to_be_bytes();
    ObjectId::from_bytes([
        ts[0], ts[1], ts[2], ts[3], n[3], n[4], n[5], n[6], n[7], tag, 0, 0,
    ])
}

fn date(secs: u64) -> bson::DateTime {
    bson::DateTime::from_millis(i64::try_from((BASE + secs) * 1000).unwrap_or(i64::MAX))
}

fn user(n: u64) -> ObjectId {
    oid(USER, n, 0)
}

/// The amount of payment `i` in cents (exact integers, never floats).
fn cents(i: u64) -> u64 {
    1_000 + (i * 7_919) % 500_000
}

fn decimal_text(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Money as legacy code stored it: mostly `Decimal128`, 1 % strings, 0.5 % doubles
/// (documents written before 2021).
fn money(cents: u64, i: u64) -> RawBson {
    let text = decimal_text(cents);
    if i % 200 == 7 {
        // Deliberately a binary float: the legacy double shape.
        if let Ok(d) = text.parse::<f64>() {
            return RawBson::Double(d);
        }
    }
    if i % 100 == 3 {
        return RawBson::String(text);
    }
    match text.parse::<Decimal128>() {
        Ok(d) => RawBson::Decimal128(d),
        Err(_) => RawBson::String(text),
    }
}

fn currency(i: u64) -> &'static str {
    match i % 20 {
        7 => "usdt",
        13 => "EUR",
        17 => "USDC",
        _ => "USD",
    }
}

fn provider(i: u64) -> &'static str {
    ["stripe", "coinbase_commerce", "trezor", "stripe", "manual"]
        [usize::try_from(i % 5).unwrap_or(0)]
}

/// Whether payment `i` has a dispute still open at cutover.
fn open_dispute(i: u64) -> bool {
    i.is_multiple_of(PAYMENTS_PER_DISPUTE) && (i / PAYMENTS_PER_DISPUTE) % 10 == 5
}

/// Payment `i` (`0 <= i < payments`).
pub fn payment(i: u64) -> RawDocumentBuf {
    let t = i * 60;
    let status = if open_dispute(i) {
        "disputed"
    } else if i % 50 == 3 {
        "refunded"
    } else {
        "released"
    };
    let mut d = rawdoc! { "_id": oid(PAYMENT, i, t) };
    if i % 50 == 9 {
        d.append("purchaseRequestId", format!("tmpl_{:x}", i * 31));
    } else {
        d.append("purchaseRequestId", oid(REQUEST, i, t));
    }
    d.append("sellerOfferId", oid(OFFER, i, t));
    d.append("sellerId", user(i % 5_000));
    if i % 2_000 == 1_999 {
        // A payment with no buyer: rejected, and its entries go to suspense.
        d.append("buyerId", RawBson::Null);
    } else {
        d.append("buyerId", user(5_000 + i % 20_000));
    }
    d.append("amount", money(cents(i), i));
    d.append("currency", currency(i));
    d.append("provider", provider(i));
    d.append("status", status);
    if i.is_multiple_of(3) {
        d.append(
            "blockchain",
            rawdoc! {
                "network": "ethereum",
                "txHash": format!("0x{:064x}", i * 2_654_435_761),
                "fromAddress": format!("0x{:040x}", i * 40_503),
                "toAddress": format!("0x{:040x}", 0xe5c0_u64),
                "confirmations": 12_i32,
                "rawAmount": format!("{}0000", cents(i)),
                "decimals": 6_i32,
            },
        );
    }
    d.append("metadata", rawdoc! { "checkout": "web", "attempt": 1_i32 });
    d.append("paidAt", date(t + 300));
    match status {
        "released" => d.append("releasedAt", date(t + 86_400)),
        "refunded" => d.append("refundedAt", date(t + 86_400)),
        _ => {}
    }
    if i % 1_000 != 500 {
        // A few very old documents lack createdAt.
        d.append("createdAt", date(t));
    }
    d.append("updatedAt", date(t + 86_400));
    d.append("__v", 0_i32);
    d
}

/// The [`ENTRIES_PER_PAYMENT`] ledger entries of payment `i`, in `_id` order.
pub fn entries(i: u64) -> [RawDocumentBuf; 3] {
    let t = i * 60;
    let total = cents(i);
    let fee = (total * 2 / 100).max(1);
    let plan: [(&str, u64, u64); 3] = if open_dispute(i) {
        let first = total * 6 / 10;
        [
            ("deposit", first, 300),
            ("deposit", total - first, 900),
            ("aml_fee", 1, 1_200),
        ]
    } else if i % 50 == 3 {
        [
            ("deposit", total, 300),
            ("aml_fee", fee, 600),
            ("refund", total - fee, 86_400),
        ]
    } else {
        [
            ("deposit", total, 300),
            ("fee", fee, 600),
            ("release", total - fee, 86_400),
        ]
    };
    let payment_id = oid(PAYMENT, i, t);
    std::array::from_fn(|j| {
        let (kind, amount, after) = plan[j];
        let n = i * ENTRIES_PER_PAYMENT + j as u64;
        let mut d = rawdoc! { "_id": oid(ENTRY, n, t + after) };
        if i % 500 == 11 {
            // Older code stored the reference as a 24-hex string.
            d.append("paymentId", payment_id.to_hex());
        } else {
            d.append("paymentId", payment_id);
        }
        d.append("purchaseRequestId", oid(REQUEST, i, t));
        d.append(
            "createdBy",
            if kind == "deposit" {
                "webhook:coinbase"
            } else {
                "cron:auto-release"
            },
        );
        d.append("type", kind);
        d.append("amount", money(amount, i + after));
        d.append("currency", currency(i));
        if kind == "deposit" {
            d.append("reference", format!("ch_{:x}_{after}", i * 2_654_435_761));
        }
        d.append("createdAt", date(t + after));
        d.append("__v", 0_i32);
        d
    })
}

fn array(items: Vec<RawBson>) -> RawArrayBuf {
    let mut a = RawArrayBuf::new();
    for item in items {
        a.push(item);
    }
    a
}

/// Dispute `k`, of payment `k * PAYMENTS_PER_DISPUTE`.
pub fn dispute(k: u64) -> RawDocumentBuf {
    let i = k * PAYMENTS_PER_DISPUTE;
    let t = i * 60 + 2 * 86_400;
    let open = open_dispute(i);
    let buyer = user(5_000 + i % 20_000);
    let admin = user(90_000 + k % 7);
    let reasons = [
        "item_not_received",
        "not_as_described",
        "payment_issue",
        "fraud",
        "other",
    ];
    let mut d = rawdoc! { "_id": oid(DISPUTE, k, t) };
    if k % 100 != 42 {
        // Older disputes lack paymentId: found by purchaseRequestId.
        d.append("paymentId", oid(PAYMENT, i, i * 60));
    }
    d.append("purchaseRequestId", oid(REQUEST, i, i * 60));
    d.append("chatId", oid(CHAT, k, t));
    d.append("openedBy", buyer);
    d.append("openedByRole", "buyer");
    d.append("reason", reasons[usize::try_from(k % 5).unwrap_or(0)]);
    d.append(
        "description",
        format!("order {k}: the parcel did not arrive as agreed"),
    );
    d.append("status", if open { "under_review" } else { "resolved" });
    d.append(
        "priority",
        if k.is_multiple_of(4) {
            "high"
        } else {
            "medium"
        },
    );
    d.append("adminId", admin);
    d.append(
        "evidence",
        array(vec![RawBson::Document(rawdoc! {
            "_id": oid(SUB, k * 4, t),
            "submittedBy": buyer,
            "type": "image",
            "url": format!("https://files.example/evidence/{k}.png"),
            "description": "photo of the parcel",
            "submittedAt": date(t + 60),
        })]),
    );
    d.append(
        "messages",
        array(vec![
            RawBson::Document(rawdoc! {
                "_id": oid(SUB, k * 4 + 1, t),
                "author": buyer,
                "authorRole": "buyer",
                "body": "It never arrived; tracking stops at the depot.",
                "attachments": array(vec![RawBson::String(format!("{k}-tracking.pdf"))]),
                "createdAt": date(t + 120),
            }),
            RawBson::Document(rawdoc! {
                "_id": oid(SUB, k * 4 + 2, t),
                "author": admin,
                "authorRole": "admin",
                "body": "We asked the seller for proof of delivery.",
                "attachments": RawArrayBuf::new(),
                "createdAt": date(t + 3_600),
            }),
        ]),
    );
    let mut timeline = vec![RawBson::Document(rawdoc! {
        "status": "open", "at": date(t), "by": buyer,
    })];
    if open {
        timeline.push(RawBson::Document(rawdoc! {
            "status": "under_review", "at": date(t + 3_600), "by": admin,
        }));
    } else {
        timeline.push(RawBson::Document(rawdoc! {
            "status": "resolved", "at": date(t + 7_200), "by": "system", "note": "seller proved delivery",
        }));
        d.append(
            "resolution",
            rawdoc! {
                "outcome": "release_to_seller",
                "resolvedBy": admin,
                "resolvedAt": date(t + 7_200),
                "note": "seller proved delivery",
            },
        );
    }
    d.append("timeline", array(timeline));
    d.append("createdAt", date(t));
    d.append("updatedAt", date(t + 7_200));
    d.append("__v", 0_i32);
    d
}

/// The number of documents in each of [`COLLECTIONS`].
///
/// # Errors
/// A driver error.
pub async fn counts(legacy: &Legacy) -> Result<Sizes, MongoError> {
    Ok(Sizes {
        payments: legacy.count(COLLECTIONS[0], None).await?,
        entries: legacy.count(COLLECTIONS[1], None).await?,
        disputes: legacy.count(COLLECTIONS[2], None).await?,
    })
}

/// Drops [`COLLECTIONS`] and loads `sizes` with `insert_many` in chunks of `chunk`
/// documents; returns the seconds taken.
///
/// # Errors
/// A driver error.
pub async fn load(legacy: &Legacy, sizes: Sizes, chunk: usize) -> Result<f64, MongoError> {
    let started = Instant::now();
    for name in COLLECTIONS {
        legacy.raw(name).drop().await?;
    }
    let chunk = chunk.max(1);
    let mut payments = Vec::with_capacity(chunk);
    let mut entries = Vec::with_capacity(chunk);
    for i in 0..sizes.payments {
        payments.push(payment(i));
        entries.extend(self::entries(i));
        if payments.len() >= chunk {
            insert(legacy, COLLECTIONS[0], &mut payments).await?;
        }
        if entries.len() >= chunk {
            insert(legacy, COLLECTIONS[1], &mut entries).await?;
        }
    }
    insert(legacy, COLLECTIONS[0], &mut payments).await?;
    insert(legacy, COLLECTIONS[1], &mut entries).await?;
    let mut disputes = Vec::with_capacity(chunk);
    for k in 0..sizes.disputes {
        disputes.push(dispute(k));
        if disputes.len() >= chunk {
            insert(legacy, COLLECTIONS[2], &mut disputes).await?;
        }
    }
    insert(legacy, COLLECTIONS[2], &mut disputes).await?;
    Ok(started.elapsed().as_secs_f64())
}

async fn insert(
    legacy: &Legacy,
    name: &str,
    docs: &mut Vec<RawDocumentBuf>,
) -> Result<(), MongoError> {
    if docs.is_empty() {
        return Ok(());
    }
    legacy
        .raw(name)
        .insert_many(std::mem::take(docs))
        .ordered(true)
        .await?;
    Ok(())
}

/// What a plain scan read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scanned {
    /// Documents.
    pub documents: u64,
    /// Their BSON bytes.
    pub bytes: u64,
}

/// Reads all of `name` in `_id` order with the importer's driver, cursor and batch size,
/// counting documents and bytes and doing nothing else: the fastest the source hands the
/// documents over, the baseline of the import.
///
/// # Errors
/// A driver error.
pub async fn scan(legacy: &Legacy, name: &str, batch_size: u32) -> Result<Scanned, MongoError> {
    let mut cursor = legacy
        .raw(name)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .batch_size(batch_size)
        .await?;
    let mut out = Scanned::default();
    while cursor.advance().await? {
        out.documents += 1;
        out.bytes += cursor.current().as_bytes().len() as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{parse_dispute, parse_entry, payment as translate_payment};

    #[test]
    fn ids_are_unique_and_ordered_by_time() {
        let mut ids: Vec<ObjectId> = (0..2_000)
            .flat_map(|i| entries(i).map(|d| d.get_object_id("_id").ok()))
            .flatten()
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[test]
    fn generated_documents_are_mostly_clean() {
        let payments_ok = (0..2_000).filter(|&i| translate_payment(&payment(i)).is_ok());
        assert_eq!(payments_ok.count(), 1_999);
        let entries_ok = (0..2_000)
            .flat_map(entries)
            .filter(|d| parse_entry(d).is_ok())
            .count();
        assert_eq!(entries_ok, 6_000);
        assert!((0..200).all(|k| parse_dispute(&dispute(k)).is_ok()));
    }
}
