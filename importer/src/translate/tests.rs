//! The translation on documents: every row of `legacy-mongo.md`, each rejection reason.

use std::str::FromStr;

use bson::oid::ObjectId;
use bson::{rawdoc, Decimal128, RawDocumentBuf};
use chrono::{TimeZone, Utc};
use ledger::account::{Account, Reference};
use ledger::dispute::{DisputeStatus, Outcome, Priority};
use ledger::money::Asset;
use ledger::payment::{EntryKind, EntryPlacement, PaymentStatus};
use rust_decimal::Decimal;

use super::*;
use crate::ids::Collection;
use crate::legacy::{AnomalyKind, RejectCode};

const PAY: &str = "65a1b2c3d4e5f60718293a4b";
const BUYER: &str = "65a1b2c3d4e5f60718290001";
const SELLER: &str = "65a1b2c3d4e5f60718290002";

fn oid(hex: &str) -> ObjectId {
    ObjectId::parse_str(hex).unwrap()
}

fn dec(text: &str) -> Decimal {
    ledger::money::parse_decimal_exact(text).unwrap()
}

fn date(y: i32, m: u32, d: u32) -> bson::DateTime {
    bson::DateTime::from_millis(
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0)
            .unwrap()
            .timestamp_millis(),
    )
}

fn base_payment() -> RawDocumentBuf {
    rawdoc! {
        "_id": oid(PAY),
        "purchaseRequestId": oid("65a1b2c3d4e5f60718290003"),
        "sellerOfferId": null,
        "sellerId": oid(SELLER),
        "buyerId": oid(BUYER),
        "amount": Decimal128::from_str("125.50").unwrap(),
        "currency": "usd",
        "provider": "stripe",
        "status": "funded",
        "createdAt": date(2022, 3, 1),
        "updatedAt": date(2022, 3, 2),
        "__v": 0_i32,
    }
}

fn with(mut doc: RawDocumentBuf, key: &str, value: impl Into<bson::RawBson>) -> RawDocumentBuf {
    // Rebuild without the key, then append it: a key never appears twice.
    let mut out = RawDocumentBuf::new();
    for item in &doc {
        let (k, v) = item.unwrap();
        if k != key {
            out.append(k, v.to_raw_bson());
        }
    }
    out.append(key, value);
    doc = out;
    doc
}

fn without(doc: &RawDocumentBuf, key: &str) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    for item in doc {
        let (k, v) = item.unwrap();
        if k != key {
            out.append(k, v.to_raw_bson());
        }
    }
    out
}

fn pay_reject(doc: &RawDocumentBuf) -> RejectCode {
    payment(doc).unwrap_err().code
}

#[test]
fn a_payment_imports_with_every_field() {
    let doc = with(
        with(
            base_payment(),
            "blockchain",
            rawdoc! {
                "network": "ethereum", "txHash": "0xabc", "confirmations": 12_i32,
                "rawAmount": "115792089237316195423570985008687907853269984665640564039457584007913129639935",
                "decimals": 18_i32
            },
        ),
        "metadata",
        rawdoc! { "orderRef": "A-1", "n": 2.5 },
    );
    let (p, source) = payment(&doc).unwrap();
    assert_eq!(p.terms.payment_id, Collection::Payments.uuid_of(PAY));
    assert_eq!(p.terms.amount, dec("125.5"));
    assert_eq!(p.terms.asset, Asset::Usd);
    assert_eq!(p.terms.provider, "stripe");
    assert_eq!(
        p.terms.buyer,
        Reference::entity(Collection::Users.uuid_of(BUYER))
    );
    assert_eq!(p.terms.seller_offer, None);
    assert_eq!(
        (p.legacy_status.as_str(), p.mapped_status),
        ("funded", PaymentStatus::Funded)
    );
    assert_eq!(
        p.created_at,
        Utc.with_ymd_and_hms(2022, 3, 1, 12, 0, 0).unwrap()
    );
    assert!(!p.created_at_from_object_id);
    let chain = p.blockchain.unwrap();
    assert_eq!(chain["rawAmount"].as_str().unwrap().len(), 78);
    assert_eq!(p.terms.metadata.unwrap()["orderRef"], "A-1");
    assert_eq!(source.object_id, PAY);
    assert_eq!(source.document["_id"]["$oid"], PAY);
    assert_eq!(source.digest.len(), 64);
    assert!(source.anomalies.is_empty(), "{:?}", source.anomalies);
}

#[test]
fn every_money_shape_of_the_contract_reads_exactly() {
    let cases: Vec<(bson::RawBson, &str)> = vec![
        (
            bson::RawBson::Decimal128(Decimal128::from_str("1.05E+3").unwrap()),
            "1050",
        ),
        (bson::RawBson::String("125.50".into()), "125.5"),
        (bson::RawBson::String("125.500".into()), "125.5"),
        (bson::RawBson::Double(0.1), "0.1"),
        (bson::RawBson::Int32(40), "40"),
        (bson::RawBson::Int64(5_000_000_000), "5000000000"),
    ];
    for (value, expected) in cases {
        let (p, _) = payment(&with(base_payment(), "amount", value.clone())).unwrap();
        assert_eq!(p.terms.amount, dec(expected), "{value:?}");
    }
}

#[test]
fn every_corrupt_amount_is_rejected_with_its_reason() {
    let cases: Vec<(bson::RawBson, RejectCode)> = vec![
        (bson::RawBson::Double(f64::NAN), RejectCode::NotANumber),
        (bson::RawBson::Double(f64::INFINITY), RejectCode::Infinite),
        (bson::RawBson::Double(-0.0), RejectCode::NegativeZero),
        (bson::RawBson::Double(0.1 + 0.2), RejectCode::FloatNoise),
        (
            bson::RawBson::Decimal128(Decimal128::from_str("NaN").unwrap()),
            RejectCode::NotANumber,
        ),
        (
            bson::RawBson::Decimal128(Decimal128::from_str("1E+40").unwrap()),
            RejectCode::OutOfRange,
        ),
        (
            bson::RawBson::String("1e2".into()),
            RejectCode::NotPlainDecimal,
        ),
        (bson::RawBson::String("125.505".into()), RejectCode::TooFine),
        (bson::RawBson::Double(0.001), RejectCode::TooFine),
        (
            bson::RawBson::String("123456789012345678901234567890".into()),
            RejectCode::OutOfRange,
        ),
        (bson::RawBson::Int32(0), RejectCode::ZeroAmount),
        (bson::RawBson::Int32(-5), RejectCode::NegativeAmount),
        (bson::RawBson::Boolean(true), RejectCode::WrongType),
    ];
    for (value, code) in cases {
        assert_eq!(
            pay_reject(&with(base_payment(), "amount", value.clone())),
            code,
            "{value:?}"
        );
    }
    assert_eq!(
        pay_reject(&without(&base_payment(), "amount")),
        RejectCode::MissingField
    );
}

#[test]
fn currencies_are_upper_cased_and_unknown_ones_rejected() {
    for (code, asset) in [
        ("usdt", Asset::Usdt),
        ("USDC", Asset::Usdc),
        ("BTC", Asset::Btc),
    ] {
        let doc = with(with(base_payment(), "currency", code), "amount", "1.5");
        assert_eq!(payment(&doc).unwrap().0.terms.asset, asset);
    }
    assert_eq!(
        pay_reject(&with(base_payment(), "currency", "GBP")),
        RejectCode::UnknownCurrency
    );
    assert_eq!(
        pay_reject(&with(base_payment(), "currency", 5_i32)),
        RejectCode::WrongType
    );
    // Scale is per asset: 8 decimals are fine in BTC, not in USD.
    let btc = with(
        with(base_payment(), "currency", "BTC"),
        "amount",
        "0.00000001",
    );
    assert!(payment(&btc).is_ok());
    let eth = with(
        with(base_payment(), "currency", "ETH"),
        "amount",
        "0.000000000000000001",
    );
    assert!(payment(&eth).is_ok());
}

#[test]
fn mixed_references_of_a_payment() {
    let doc = with(
        with(base_payment(), "purchaseRequestId", "tmpl_8f2a"),
        "sellerId",
        "65A1B2C3D4E5F60718290002",
    );
    let (p, source) = payment(&doc).unwrap();
    assert_eq!(
        p.terms.purchase_request,
        Some(Reference::external("tmpl_8f2a"))
    );
    // Null or absent: no reference, the payment still imports (only the parties are
    // required).
    for no_request in [
        without(&base_payment(), "purchaseRequestId"),
        with(base_payment(), "purchaseRequestId", bson::RawBson::Null),
    ] {
        assert_eq!(payment(&no_request).unwrap().0.terms.purchase_request, None);
    }
    assert_eq!(
        p.terms.seller,
        Reference::entity(Collection::Users.uuid_of(SELLER))
    );
    assert_eq!(source.anomalies[0].kind, AnomalyKind::AmbiguousReference);
    let merchant = with(base_payment(), "sellerId", "merchant:acme");
    assert_eq!(
        payment(&merchant).unwrap().0.terms.seller,
        Reference::external("merchant:acme")
    );
    assert_eq!(
        pay_reject(&without(&base_payment(), "sellerId")),
        RejectCode::MissingField
    );
    assert_eq!(
        pay_reject(&with(base_payment(), "sellerId", bson::RawBson::Null)),
        RejectCode::MissingField
    );
    assert_eq!(
        pay_reject(&without(&base_payment(), "buyerId")),
        RejectCode::MissingField
    );
    assert_eq!(
        pay_reject(&with(base_payment(), "buyerId", BUYER)),
        RejectCode::WrongType
    );
    assert_eq!(
        pay_reject(&with(base_payment(), "sellerOfferId", "")),
        RejectCode::EmptyReference
    );
}

#[test]
fn a_rejected_payment_still_names_its_purchase_request() {
    let good = payment(&base_payment()).unwrap().0;
    let key = good
        .terms
        .purchase_request
        .as_ref()
        .map(Reference::account_key)
        .unwrap_or_default();
    let too_fine = with(base_payment(), "amount", "125.505");
    assert_eq!(pay_reject(&too_fine), RejectCode::TooFine);
    assert_eq!(purchase_request_key(&too_fine), Some(key.clone()));
    let as_hex = with(
        with(base_payment(), "amount", "x"),
        "purchaseRequestId",
        "65a1b2c3d4e5f60718290003",
    );
    assert_eq!(purchase_request_key(&as_hex), Some(key));
    let template = with(base_payment(), "purchaseRequestId", "tmpl_8f2a");
    assert_eq!(
        purchase_request_key(&template).as_deref(),
        Some("ext:tmpl_8f2a")
    );
    assert_eq!(
        purchase_request_key(&without(&base_payment(), "purchaseRequestId")),
        None
    );
}

#[test]
fn a_missing_created_at_comes_from_the_object_id() {
    let (p, source) = payment(&without(&base_payment(), "createdAt")).unwrap();
    assert_eq!(p.created_at, crate::legacy::object_id_time(oid(PAY)));
    assert!(p.created_at_from_object_id);
    assert!(source
        .anomalies
        .iter()
        .any(|a| a.kind == AnomalyKind::CreatedAtFromObjectId));
    assert_eq!(
        pay_reject(&with(base_payment(), "createdAt", "2022-03-01")),
        RejectCode::WrongType
    );
    assert_eq!(
        pay_reject(&with(
            base_payment(),
            "paidAt",
            bson::DateTime::from_millis(i64::MAX)
        )),
        RejectCode::DateOutOfRange
    );
}

#[test]
fn statuses_providers_and_ids_outside_the_contract_are_rejected() {
    assert_eq!(
        pay_reject(&with(base_payment(), "status", "lost")),
        RejectCode::InvalidValue
    );
    assert_eq!(
        pay_reject(&with(base_payment(), "provider", "Stripe")),
        RejectCode::InvalidValue
    );
    assert_eq!(
        pay_reject(&with(base_payment(), "_id", "abc")),
        RejectCode::BadId
    );
    assert_eq!(
        pay_reject(&with(
            base_payment(),
            "metadata",
            bson::RawBson::Symbol("s".into())
        )),
        RejectCode::UnsupportedBsonType
    );
    assert_eq!(
        pay_reject(&with(
            base_payment(),
            "x",
            bson::Timestamp {
                time: 1,
                increment: 1
            }
        )),
        RejectCode::UnsupportedBsonType
    );
    for status in [
        "pending",
        "awaiting_deposit",
        "confirming",
        "funded",
        "released",
        "partially_refunded",
        "refunded",
        "disputed",
        "cancelled",
        "expired",
        "failed",
    ] {
        assert!(
            payment(&with(base_payment(), "status", status)).is_ok(),
            "{status}"
        );
    }
}

#[test]
fn text_with_control_characters_and_nul_imports_with_nul_replaced() {
    let doc = with(
        base_payment(),
        "metadata",
        rawdoc! { "note": "a\u{0}b\u{7}c" },
    );
    let (p, source) = payment(&doc).unwrap();
    assert_eq!(p.terms.metadata.unwrap()["note"], "a\u{fffd}b\u{7}c");
    assert_eq!(source.document["metadata"]["note"], "a\u{fffd}b\u{7}c");
    assert_eq!(
        source
            .anomalies
            .iter()
            .filter(|a| a.kind == AnomalyKind::ReplacedNul)
            .count(),
        1
    );
}

#[test]
fn unknown_fields_are_carried_and_noted() {
    let (p, source) = payment(&with(base_payment(), "legacyFlag", true)).unwrap();
    assert_eq!(p.document["legacyFlag"], true);
    assert_eq!(source.anomalies[0].kind, AnomalyKind::UnknownField);
}

// --- ledger entries -------------------------------------------------------------------

fn entry(kind: &str, amount: impl Into<bson::RawBson>) -> RawDocumentBuf {
    rawdoc! {
        "_id": oid("65b000000000000000000001"),
        "paymentId": oid(PAY),
        "purchaseRequestId": oid("65a1b2c3d4e5f60718290003"),
        "createdBy": "webhook:coinbase",
        "type": kind,
        "amount": amount.into(),
        "currency": "USD",
        "reference": "ch_1",
        "createdAt": date(2022, 3, 1),
    }
}

fn terms() -> PaymentContext {
    PaymentContext::Imported(Box::new(payment(&base_payment()).unwrap().0.terms))
}

fn placed(doc: &RawDocumentBuf) -> Placed {
    place_entry(&parse_entry(doc).unwrap(), Some(&terms())).unwrap()
}

fn escrow() -> Account {
    Account::Escrow(Collection::Payments.uuid_of(PAY))
}

fn seller() -> Account {
    Account::Seller(Reference::entity(Collection::Users.uuid_of(SELLER)))
}

fn buyer() -> Account {
    Account::Buyer(Reference::entity(Collection::Users.uuid_of(BUYER)))
}

#[test]
fn every_entry_type_posts_by_the_mapping_table() {
    let ext = Account::External("stripe".into());
    let with_account = |kind: &str, dir: Option<&str>, account: &str| {
        let mut d = with(entry(kind, "10"), "account", account);
        if let Some(dir) = dir {
            d = with(d, "direction", dir);
        }
        d
    };
    let cases = [
        (entry("deposit", "10"), ext.clone(), escrow()),
        (entry("release", "10"), escrow(), seller()),
        (entry("refund", "10"), escrow(), buyer()),
        (entry("fee", "10"), escrow(), Account::PlatformFees),
        (entry("aml_fee", "10"), escrow(), Account::PlatformAmlFees),
        (
            with_account("payout", None, "seller"),
            seller(),
            ext.clone(),
        ),
        (with_account("payout", None, "buyer"), buyer(), ext.clone()),
        (
            with_account("adjustment", Some("credit"), "escrow"),
            Account::PlatformAdjustments,
            escrow(),
        ),
        (
            with_account("adjustment", Some("credit"), "seller"),
            Account::PlatformAdjustments,
            seller(),
        ),
        (
            with_account("adjustment", Some("debit"), "buyer"),
            buyer(),
            Account::PlatformAdjustments,
        ),
        (
            with_account("adjustment", Some("debit"), "platform"),
            Account::PlatformFees,
            Account::PlatformAdjustments,
        ),
    ];
    for (doc, from, to) in cases {
        let p = placed(&doc);
        assert_eq!(
            (&p.event.from, &p.event.to),
            (&from, &to),
            "{:?}",
            p.event.kind
        );
        assert_eq!(p.event.amount, dec("10"));
        assert_eq!(p.stream_id, Collection::Payments.uuid_of(PAY));
        assert_eq!(p.event.placement, EntryPlacement::Payment);
    }
}

#[test]
fn negative_debits_drop_their_sign_and_negative_credits_are_rejected() {
    for kind in ["release", "refund", "fee", "aml_fee"] {
        let p = placed(&entry(kind, -7_i32));
        assert_eq!(p.event.amount, dec("7"));
        assert!(p.event.sign_dropped);
        assert!(p
            .anomalies
            .iter()
            .any(|a| a.kind == AnomalyKind::SignDropped));
    }
    let debit = with(
        with(entry("adjustment", "-2.5"), "direction", "debit"),
        "account",
        "escrow",
    );
    assert!(placed(&debit).event.sign_dropped);
    let credit = with(
        with(entry("adjustment", "-2.5"), "direction", "credit"),
        "account",
        "escrow",
    );
    assert_eq!(
        parse_entry(&credit).unwrap_err().code,
        RejectCode::NegativeAmount
    );
    assert_eq!(
        parse_entry(&entry("deposit", -1_i32)).unwrap_err().code,
        RejectCode::NegativeAmount
    );
    assert_eq!(
        parse_entry(&entry("deposit", 0_i32)).unwrap_err().code,
        RejectCode::ZeroAmount
    );
    assert_eq!(
        parse_entry(&entry("deposit", "0.001")).unwrap_err().code,
        RejectCode::TooFine
    );
}

#[test]
fn entry_shapes_outside_the_contract_are_rejected() {
    assert_eq!(
        parse_entry(&entry("bonus", "1")).unwrap_err().code,
        RejectCode::InvalidValue
    );
    assert_eq!(
        parse_entry(&entry("payout", "1")).unwrap_err().code,
        RejectCode::InvalidValue
    );
    let no_dir = with(entry("adjustment", "1"), "account", "escrow");
    assert_eq!(
        parse_entry(&no_dir).unwrap_err().code,
        RejectCode::MissingField
    );
    let no_payment = without(&entry("deposit", "1"), "paymentId");
    assert_eq!(
        parse_entry(&no_payment).unwrap_err().code,
        RejectCode::MissingField
    );
    let bad_payment = with(entry("deposit", "1"), "paymentId", "pay_123");
    assert_eq!(
        parse_entry(&bad_payment).unwrap_err().code,
        RejectCode::PaymentIdNotObjectId
    );
    let seller_without_payment = with(
        with(
            with(entry("adjustment", "1"), "direction", "credit"),
            "account",
            "seller",
        ),
        "paymentId",
        bson::RawBson::Null,
    );
    assert_eq!(
        parse_entry(&seller_without_payment).unwrap_err().code,
        RejectCode::AdjustmentNeedsPayment
    );
    let eur = with(entry("deposit", "1"), "currency", "EUR");
    let parsed = parse_entry(&eur).unwrap();
    assert_eq!(
        place_entry(&parsed, Some(&terms())).unwrap_err().code,
        RejectCode::CurrencyMismatch
    );
}

#[test]
fn an_adjustment_without_payment_has_a_stream_of_its_own() {
    let doc = with(
        with(
            with(entry("adjustment", "3"), "direction", "credit"),
            "account",
            "platform",
        ),
        "paymentId",
        bson::RawBson::Null,
    );
    let parsed = parse_entry(&doc).unwrap();
    let p = place_entry(&parsed, None).unwrap();
    assert_eq!(p.event.placement, EntryPlacement::Unattached);
    assert_eq!(p.stream_id, parsed.entry_id);
    assert_eq!(p.stream_type, "legacy_entry");
    assert_eq!(
        (p.event.from, p.event.to),
        (Account::PlatformAdjustments, Account::PlatformFees)
    );
}

#[test]
fn orphans_and_entries_of_rejected_payments_go_to_suspense() {
    let parsed = parse_entry(&entry("release", "4")).unwrap();
    let orphan = place_entry(&parsed, Some(&PaymentContext::Missing)).unwrap();
    assert_eq!(
        (orphan.event.from.clone(), orphan.event.to.clone()),
        (escrow(), Account::PlatformSuspense)
    );
    assert_eq!(orphan.stream_id, parsed.entry_id);
    assert_eq!(orphan.event.placement, EntryPlacement::Orphan);
    assert!(orphan
        .anomalies
        .iter()
        .any(|a| a.kind == AnomalyKind::OrphanEntry));
    let rejected = place_entry(
        &parsed,
        Some(&PaymentContext::Rejected("too_fine at amount".into(), None)),
    )
    .unwrap();
    assert_eq!(rejected.event.placement, EntryPlacement::RejectedPayment);
    let a = rejected
        .anomalies
        .iter()
        .find(|a| a.kind == AnomalyKind::EntryOfRejectedPayment)
        .unwrap();
    assert!(a.detail.contains("too_fine"));
    let deposit = place_entry(
        &parse_entry(&entry("deposit", "4")).unwrap(),
        Some(&PaymentContext::Missing),
    )
    .unwrap();
    assert_eq!(
        (deposit.event.from, deposit.event.to),
        (Account::PlatformSuspense, escrow())
    );
}

#[test]
fn an_entry_in_another_currency_than_its_unimported_payment_is_rejected() {
    let eur = parse_entry(&with(entry("deposit", "4"), "currency", "EUR")).unwrap();
    let usd = parse_entry(&entry("deposit", "4")).unwrap();
    // The payment was rejected for another field but its currency reads: USD.
    let rejected_usd = without(&base_payment(), "buyerId");
    assert!(payment(&rejected_usd).is_err());
    let asset = payment_asset(&rejected_usd);
    assert_eq!(asset, Some(Asset::Usd));
    let context = PaymentContext::Rejected("missing_field at buyerId".into(), asset);
    let r = place_entry(&eur, Some(&context)).unwrap_err();
    assert_eq!(r.code, RejectCode::CurrencyMismatch);
    assert_eq!(r.field.as_deref(), Some("currency"));
    assert_eq!(
        place_entry(&usd, Some(&context)).unwrap().event.placement,
        EntryPlacement::RejectedPayment
    );
    // Valid but not imported: its currency is known.
    let r = place_entry(&eur, Some(&PaymentContext::NotImported(Asset::Usd))).unwrap_err();
    assert_eq!(r.code, RejectCode::CurrencyMismatch);
    // A payment whose currency cannot be read says nothing about the entry's.
    let unreadable = with(base_payment(), "currency", "GBP");
    assert_eq!(payment_asset(&unreadable), None);
    let context = PaymentContext::Rejected("unknown_currency at currency".into(), None);
    assert_eq!(
        place_entry(&eur, Some(&context)).unwrap().event.placement,
        EntryPlacement::RejectedPayment
    );
}

#[test]
fn a_24_hex_payment_id_string_is_the_payment_and_ambiguous() {
    let doc = with(entry("deposit", "1"), "paymentId", PAY.to_ascii_uppercase());
    let p = placed(&doc);
    assert_eq!(p.stream_id, Collection::Payments.uuid_of(PAY));
    assert!(p
        .anomalies
        .iter()
        .any(|a| a.kind == AnomalyKind::AmbiguousReference));
}

#[test]
fn retried_webhook_copies_are_found_by_value() {
    let first = parse_entry(&with(
        entry("deposit", Decimal128::from_str("2.00").unwrap()),
        "_id",
        oid("65b000000000000000000002"),
    ))
    .unwrap();
    let copy = parse_entry(&with(
        with(
            entry("deposit", Decimal128::from_str("2.0").unwrap()),
            "_id",
            oid("65b000000000000000000003"),
        ),
        "createdAt",
        bson::DateTime::from_millis(date(2022, 3, 1).timestamp_millis() + 9 * 60_000),
    ))
    .unwrap();
    let late = parse_entry(&with(
        with(
            entry("deposit", "2"),
            "_id",
            oid("65b000000000000000000004"),
        ),
        "createdAt",
        bson::DateTime::from_millis(date(2022, 3, 1).timestamp_millis() + 11 * 60_000),
    ))
    .unwrap();
    let all = vec![first.clone(), copy.clone(), late];
    let dups = duplicates_of(&first, &all);
    assert_eq!(dups.len(), 1);
    assert_eq!(dups[0].source.object_id, copy.source.object_id);
}

#[test]
fn balance_after_is_carried_never_trusted() {
    let doc = with(entry("deposit", "1"), "balanceAfter", f64::NAN);
    let p = placed(&doc);
    assert!(p.event.balance_after.unwrap().contains("NaN"));
    let doc = with(entry("deposit", "1"), "balanceAfter", "12.50");
    assert_eq!(placed(&doc).event.balance_after.as_deref(), Some("12.5"));
}

#[test]
fn kinds_parse_by_legacy_name() {
    assert_eq!(placed(&entry("aml_fee", "1")).event.kind, EntryKind::AmlFee);
}

// --- disputes -------------------------------------------------------------------------

fn dispute() -> RawDocumentBuf {
    rawdoc! {
        "_id": oid("65c000000000000000000001"),
        "paymentId": oid(PAY),
        "purchaseRequestId": oid("65a1b2c3d4e5f60718290003"),
        "chatId": oid("65c0000000000000000000aa"),
        "openedBy": oid(BUYER),
        "openedByRole": "buyer",
        "reason": "not_as_described",
        "description": "scratched",
        "status": "under_review",
        "priority": "high",
        "adminId": oid("65c0000000000000000000ad"),
        "evidence": [ { "_id": oid("65c000000000000000000e01"), "submittedBy": oid(BUYER), "type": "image", "url": "https://i/1.png", "submittedAt": date(2022, 3, 5) } ],
        "messages": [ { "_id": oid("65c000000000000000000a01"), "author": oid(BUYER), "authorRole": "buyer", "body": "see photo", "attachments": ["1.png"], "createdAt": date(2022, 3, 5) } ],
        "timeline": [
            { "status": "open", "at": date(2022, 3, 4), "by": oid(BUYER) },
            { "status": "under_review", "at": date(2022, 3, 6), "by": "system", "note": "auto" },
        ],
        "createdAt": date(2022, 3, 4),
        "updatedAt": date(2022, 3, 6),
    }
}

fn usd_payment() -> DisputePayment {
    DisputePayment {
        payment_id: Collection::Payments.uuid_of(PAY),
        asset: Asset::Usd,
        by_purchase_request: false,
    }
}

#[test]
fn a_dispute_imports_with_evidence_messages_and_timeline() {
    let parsed = parse_dispute(&dispute()).unwrap();
    assert_eq!(parsed.payment_hex.as_deref(), Some(PAY));
    let (d, anomalies) = finish_dispute(&parsed, usd_payment()).unwrap();
    assert!(anomalies.is_empty(), "{anomalies:?}");
    assert_eq!(d.opened.payment_id, Collection::Payments.uuid_of(PAY));
    assert_eq!(
        (d.status, d.priority),
        (DisputeStatus::UnderReview, Priority::High)
    );
    assert_eq!(d.evidence.len(), 1);
    assert_eq!(d.messages[0].attachments, vec!["1.png".to_owned()]);
    assert_eq!(d.timeline[1].by, Some(Reference::external("system")));
    assert_eq!(d.ended_at, None);
    assert!(d.admin.is_some());
}

#[test]
fn dispute_oddities_are_listed() {
    let empty = with(dispute(), "timeline", bson::RawArrayBuf::new());
    let parsed = parse_dispute(&empty).unwrap();
    assert!(parsed
        .source
        .anomalies
        .iter()
        .any(|a| a.kind == AnomalyKind::EmptyTimeline));
    let disagree = with(dispute(), "status", "awaiting_seller");
    let parsed = parse_dispute(&disagree).unwrap();
    assert!(parsed
        .source
        .anomalies
        .iter()
        .any(|a| a.kind == AnomalyKind::TimelineDisagreement));
    let no_priority = without(&dispute(), "priority");
    assert_eq!(
        parse_dispute(&no_priority).unwrap().imported.priority,
        Priority::Medium
    );
    let no_payment = without(&dispute(), "paymentId");
    let parsed = parse_dispute(&no_payment).unwrap();
    assert_eq!(parsed.payment_hex, None);
    let (_, anomalies) = finish_dispute(
        &parsed,
        DisputePayment {
            by_purchase_request: true,
            ..usd_payment()
        },
    )
    .unwrap();
    assert!(anomalies
        .iter()
        .any(|a| a.kind == AnomalyKind::PaymentFoundByPurchaseRequest));
}

#[test]
fn a_long_message_with_control_characters_imports() {
    let body = format!("{}\u{0}\u{1b}[31m", "x".repeat(1024 * 1024));
    let doc = with(
        dispute(),
        "messages",
        bson::rawdoc! { "0": { "_id": oid("65c000000000000000000a02"), "author": "system", "authorRole": "system", "body": body.clone() } }
            .iter()
            .map(|x| x.unwrap().1.to_raw_bson())
            .collect::<bson::RawArrayBuf>(),
    );
    let parsed = parse_dispute(&doc).unwrap();
    let m = &parsed.imported.messages[0];
    assert_eq!(m.body.len(), body.len() + 2);
    assert!(m.body.ends_with("\u{fffd}\u{1b}[31m"));
    assert!(parsed
        .source
        .anomalies
        .iter()
        .any(|a| a.kind == AnomalyKind::ReplacedNul));
}

#[test]
fn a_resolved_dispute_checks_its_amounts_at_the_payment_scale() {
    let resolved = with(
        with(dispute(), "status", "resolved"),
        "resolution",
        rawdoc! { "outcome": "split", "sellerAmount": "60.00", "buyerAmount": Decimal128::from_str("40").unwrap(), "resolvedBy": oid("65c0000000000000000000ad"), "resolvedAt": date(2022, 3, 9) },
    );
    let parsed = parse_dispute(&resolved).unwrap();
    let (d, _) = finish_dispute(&parsed, usd_payment()).unwrap();
    let r = d.resolution.unwrap();
    assert_eq!(
        (r.outcome, r.seller_amount, r.buyer_amount),
        (Outcome::Split, Some(dec("60")), Some(dec("40")))
    );
    assert_eq!(
        d.ended_at,
        Some(Utc.with_ymd_and_hms(2022, 3, 9, 12, 0, 0).unwrap())
    );
    let fine = with(
        with(dispute(), "status", "resolved"),
        "resolution",
        rawdoc! { "outcome": "split", "sellerAmount": "60.001", "buyerAmount": "40" },
    );
    assert_eq!(
        finish_dispute(&parse_dispute(&fine).unwrap(), usd_payment())
            .unwrap_err()
            .code,
        RejectCode::TooFine
    );
}

#[test]
fn dispute_shapes_outside_the_contract_are_rejected() {
    assert_eq!(
        parse_dispute(&with(dispute(), "status", "escalated"))
            .unwrap_err()
            .code,
        RejectCode::InvalidValue
    );
    assert_eq!(
        parse_dispute(&with(dispute(), "openedByRole", "admin"))
            .unwrap_err()
            .code,
        RejectCode::InvalidValue
    );
    assert_eq!(
        parse_dispute(&without(&dispute(), "openedBy"))
            .unwrap_err()
            .code,
        RejectCode::MissingField
    );
    assert_eq!(
        parse_dispute(&with(dispute(), "paymentId", "p-1"))
            .unwrap_err()
            .code,
        RejectCode::PaymentIdNotObjectId
    );
    let bad_evidence = with(dispute(), "evidence", bson::rawdoc! { "0": { "_id": oid("65c000000000000000000e02"), "submittedBy": oid(BUYER), "type": "video" } }.iter().map(|x| x.unwrap().1.to_raw_bson()).collect::<bson::RawArrayBuf>());
    assert_eq!(
        parse_dispute(&bad_evidence).unwrap_err().code,
        RejectCode::InvalidValue
    );
}

// --- rows of legacy-mongo.md no other test covers -------------------------------------

#[test]
fn every_currency_takes_amounts_at_its_own_scale_and_refuses_finer() {
    for (code, finest, too_fine) in [
        ("EUR", "1.01", "1.001"),
        ("USDT", "1.000001", "1.0000001"),
        ("USDC", "1.000001", "1.0000001"),
        ("BTC", "0.00000001", "0.000000001"),
        ("ETH", "0.000000000000000001", "0.0000000000000000001"),
    ] {
        let doc = |amount: &str| with(with(base_payment(), "currency", code), "amount", amount);
        let (p, _) = payment(&doc(finest)).unwrap();
        assert_eq!(p.terms.amount, dec(finest), "{code}");
        assert_eq!(pay_reject(&doc(too_fine)), RejectCode::TooFine, "{code}");
    }
}

#[test]
fn a_negative_payout_drops_its_sign() {
    for account in ["seller", "buyer"] {
        let p = placed(&with(entry("payout", -3_i32), "account", account));
        assert_eq!(p.event.amount, dec("3"), "{account}");
        assert!(p.event.sign_dropped, "{account}");
        assert!(p
            .anomalies
            .iter()
            .any(|a| a.kind == AnomalyKind::SignDropped));
    }
}

#[test]
fn an_entry_without_created_at_takes_the_time_of_its_id() {
    let doc = without(&entry("deposit", "1"), "createdAt");
    assert_eq!(
        parse_entry(&doc).unwrap().created_at.timestamp_millis(),
        oid("65b000000000000000000001")
            .timestamp()
            .timestamp_millis()
    );
    let p = placed(&doc);
    assert!(p
        .anomalies
        .iter()
        .any(|a| a.kind == AnomalyKind::CreatedAtFromObjectId));
}

#[test]
fn orphans_of_every_type_post_their_unknown_sides_to_suspense() {
    let suspense = Account::PlatformSuspense;
    let with_account = |kind: &str, dir: Option<&str>, account: &str| {
        let mut d = with(entry(kind, "10"), "account", account);
        if let Some(dir) = dir {
            d = with(d, "direction", dir);
        }
        d
    };
    let cases = [
        (entry("refund", "10"), escrow(), suspense.clone()),
        (
            with_account("payout", None, "seller"),
            suspense.clone(),
            suspense.clone(),
        ),
        (
            with_account("adjustment", Some("credit"), "seller"),
            Account::PlatformAdjustments,
            suspense.clone(),
        ),
        (
            with_account("adjustment", Some("debit"), "buyer"),
            suspense.clone(),
            Account::PlatformAdjustments,
        ),
        (
            with_account("adjustment", Some("credit"), "escrow"),
            Account::PlatformAdjustments,
            escrow(),
        ),
    ];
    for (doc, from, to) in cases {
        let parsed = parse_entry(&doc).unwrap();
        let p = place_entry(&parsed, Some(&PaymentContext::Missing)).unwrap();
        assert_eq!(
            (p.event.from.clone(), p.event.to.clone()),
            (from, to),
            "{}",
            parsed.kind.as_str()
        );
        assert_eq!(p.event.placement, EntryPlacement::Orphan);
    }
}

#[test]
fn an_adjustment_names_a_known_account() {
    let bad = with(
        with(entry("adjustment", "1"), "direction", "credit"),
        "account",
        "treasury",
    );
    assert_eq!(
        parse_entry(&bad).unwrap_err().code,
        RejectCode::InvalidValue
    );
    let absent = with(entry("adjustment", "1"), "direction", "credit");
    assert!(matches!(
        parse_entry(&absent).unwrap_err().code,
        RejectCode::MissingField | RejectCode::InvalidValue
    ));
}

#[test]
fn every_dispute_value_of_the_contract_reads() {
    for (status, want) in [
        ("open", DisputeStatus::Open),
        ("under_review", DisputeStatus::UnderReview),
        ("awaiting_buyer", DisputeStatus::AwaitingBuyer),
        ("awaiting_seller", DisputeStatus::AwaitingSeller),
        ("rejected", DisputeStatus::Rejected),
        ("withdrawn", DisputeStatus::Withdrawn),
        ("closed", DisputeStatus::Closed),
    ] {
        let parsed = parse_dispute(&with(dispute(), "status", status)).unwrap();
        let (d, _) = finish_dispute(&parsed, usd_payment()).unwrap();
        assert_eq!(d.status, want, "{status}");
    }
    for (priority, want) in [
        ("low", Priority::Low),
        ("medium", Priority::Medium),
        ("high", Priority::High),
        ("urgent", Priority::Urgent),
    ] {
        let parsed = parse_dispute(&with(dispute(), "priority", priority)).unwrap();
        let (d, _) = finish_dispute(&parsed, usd_payment()).unwrap();
        assert_eq!(d.priority, want, "{priority}");
    }
}
