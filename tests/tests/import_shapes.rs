//! Legacy shapes that were only unit-tested on raw BSON, now loaded into the real
//! MongoDB-wire server (`TEST_MONGO_URI`) and run through the real binary, the store and
//! the projections: refunds, AML fees, payouts to seller and buyer, debit adjustments of a
//! payment, `balanceAfter`, `blockchain.rawAmount`, the rejects of `legacy-mongo.md` and
//! disputes with evidence or without a timeline. And a run killed (SIGKILL) during the
//! `fundsledgerentries` pass or during `import disputes`, resumed, ends with exactly the
//! events, rejects and anomalies of an uninterrupted run.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{rawdoc, Decimal128, RawBson, RawDocumentBuf};
use chrono::{TimeZone, Utc};
use e2e::legacy::{
    event_rows, import, insert, kill_at_checkpoint, legacy_db, mongo_uri, ok, spawn_import, without,
};
use e2e::TestDb;
use importer::ids::Collection;
use mongodb::Database;
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

fn oid(n: u32) -> ObjectId {
    ObjectId::parse_str(format!("65b2c3d4e5f60718{n:08x}")).expect("oid")
}

fn hex(n: u32) -> String {
    oid(n).to_hex()
}

fn at(day: u32, minute: u32) -> bson::DateTime {
    bson::DateTime::from_millis(
        Utc.with_ymd_and_hms(2022, 3, day, 10, minute, 0)
            .single()
            .expect("date")
            .timestamp_millis(),
    )
}

fn dec(s: &str) -> Decimal {
    ledger::money::parse_decimal_exact(s).expect("decimal")
}

fn d128(s: &str) -> Decimal128 {
    s.parse().expect("decimal128")
}

fn payment_uuid(n: u32) -> Uuid {
    Collection::Payments.uuid_of(&hex(n))
}

fn entry_uuid(n: u32) -> Uuid {
    Collection::FundsLedgerEntries.uuid_of(&hex(n))
}

fn dispute_uuid(n: u32) -> Uuid {
    Collection::Disputes.uuid_of(&hex(n))
}

const SELLER: u32 = 9001;
const BUYER: u32 = 9002;

fn escrow(n: u32) -> String {
    format!("escrow:{}", payment_uuid(n))
}

fn seller() -> String {
    format!("seller:{}", Collection::Users.uuid_of(&hex(SELLER)))
}

fn buyer() -> String {
    format!("buyer:{}", Collection::Users.uuid_of(&hex(BUYER)))
}

fn payment_doc(n: u32, amount: impl Into<RawBson>, currency: &str, status: &str) -> RawDocumentBuf {
    rawdoc! {
        "_id": oid(n),
        "purchaseRequestId": oid(1000 + n),
        "sellerOfferId": RawBson::Null,
        "sellerId": oid(SELLER),
        "buyerId": oid(BUYER),
        "amount": amount.into(),
        "currency": currency,
        "provider": "stripe",
        "status": status,
        "createdAt": at(1, n),
        "updatedAt": at(2, n),
        "__v": 0_i32,
    }
}

/// Entry `n` of payment `payment`, written on 2022-03-20 at `minute`.
fn entry_doc(
    n: u32,
    payment: u32,
    kind: &str,
    amount: impl Into<RawBson>,
    minute: u32,
) -> RawDocumentBuf {
    rawdoc! {
        "_id": oid(n),
        "paymentId": oid(payment),
        "purchaseRequestId": oid(1000 + payment),
        "type": kind,
        "amount": amount.into(),
        "currency": "USD",
        "createdBy": "webhook:coinbase",
        "createdAt": at(20, minute),
    }
}

fn with(mut d: RawDocumentBuf, key: &str, value: impl Into<RawBson>) -> RawDocumentBuf {
    d.append(key, value.into());
    d
}

/// `d` with `key`'s value replaced (kept in place), or appended when absent.
fn replace(d: &RawDocumentBuf, key: &str, value: impl Into<RawBson>) -> RawDocumentBuf {
    let value = value.into();
    let mut out = RawDocumentBuf::new();
    let mut done = false;
    for item in d {
        let (k, v) = item.expect("field");
        if k == key {
            out.append(k, value.clone());
            done = true;
        } else {
            out.append(k, v.to_raw_bson());
        }
    }
    if !done {
        out.append(key, value);
    }
    out
}

/// Object id → reject code, from a report's `rejected` section.
fn rejects_of(report: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (code, list) in report["rejected"].as_object().expect("rejected section") {
        for item in list.as_array().expect("list") {
            let id = item["object_id"].as_str().expect("object_id").to_owned();
            assert!(
                out.insert(id.clone(), code.clone()).is_none(),
                "{id} rejected twice"
            );
        }
    }
    out
}

/// Object id → anomaly kinds (sorted), from a report's `anomalies` section.
fn anomalies_of(report: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (kind, list) in report["anomalies"].as_object().expect("anomalies section") {
        for item in list.as_array().expect("list") {
            let id = item["object_id"].as_str().expect("object_id").to_owned();
            out.entry(id).or_default().push(kind.clone());
        }
    }
    for kinds in out.values_mut() {
        kinds.sort();
    }
    out
}

fn read_report(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("report file")).expect("report json")
}

/// The event types of a stream, in version order.
async fn stream_types(db: &TestDb, stream: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version")
        .bind(stream)
        .fetch_all(&db.admin)
        .await
        .expect("stream events")
}

/// The stream, type and postings (account, amount, in leg order) of the one event made
/// from legacy document `object_id`.
async fn event_of(db: &TestDb, object_id: &str) -> (Uuid, String, Vec<(String, Decimal)>, Value) {
    let rows: Vec<(i64, Uuid, String, Value)> = sqlx::query_as(
        "SELECT position, stream_id, event_type, payload FROM events \
         WHERE metadata -> 'legacy' ->> 'object_id' = $1 ORDER BY position",
    )
    .bind(object_id)
    .fetch_all(&db.admin)
    .await
    .expect("events of a document");
    assert_eq!(rows.len(), 1, "events made from {object_id}: {rows:?}");
    let (position, stream, kind, payload) = rows.into_iter().next().expect("one event");
    let postings: Vec<(String, Decimal)> =
        sqlx::query_as("SELECT account, amount FROM postings WHERE position = $1 ORDER BY leg")
            .bind(position)
            .fetch_all(&db.admin)
            .await
            .expect("postings");
    (stream, kind, postings, payload)
}

/// Postings: (account, amount) in leg order.
type Legs = Vec<(String, Decimal)>;

fn legs(pairs: &[(&str, &str)]) -> Legs {
    pairs
        .iter()
        .map(|(a, m)| ((*a).to_owned(), dec(m)))
        .collect()
}

/// A projected payment: status, held, released, refunded, fees, aml_fees,
/// paid_out_seller, paid_out_buyer.
type Row = (
    String,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
);

async fn projected(db: &TestDb, n: u32) -> Row {
    sqlx::query_as(
        "SELECT status, held, released, refunded, fees, aml_fees, paid_out_seller, paid_out_buyer \
         FROM finance.payments WHERE payment_id = $1",
    )
    .bind(payment_uuid(n))
    .fetch_one(&db.admin)
    .await
    .expect("projected payment")
}

fn row(status: &str, money: [&str; 7]) -> Row {
    (
        status.to_owned(),
        dec(money[0]),
        dec(money[1]),
        dec(money[2]),
        dec(money[3]),
        dec(money[4]),
        dec(money[5]),
        dec(money[6]),
    )
}

const RAW_AMOUNT: &str =
    "115792089237316195423570985008687907853269984665640564039457584007913129639935";

#[allow(clippy::too_many_lines)]
async fn load_shapes(db: &Database) {
    let chain = rawdoc! {
        "network": "ethereum",
        "txHash": format!("0x{}", "ab".repeat(32)),
        "fromAddress": format!("0x{}", "01".repeat(20)),
        "toAddress": format!("0x{}", "02".repeat(20)),
        "confirmations": 12_i32,
        "rawAmount": RAW_AMOUNT,
        "decimals": 6_i32,
    };
    let payments = vec![
        payment_doc(1, "100", "USD", "refunded"),
        payment_doc(2, d128("200.00"), "USD", "released"),
        payment_doc(3, 50_i32, "USD", "released"),
        with(
            replace(
                &payment_doc(4, d128("12.345678"), "USDT", "disputed"),
                "provider",
                "trezor",
            ),
            "blockchain",
            chain,
        ),
        replace(
            &payment_doc(5, "30", "USD", "funded"),
            "sellerId",
            RawBson::Null,
        ),
        replace(
            &payment_doc(6, "30", "USD", "funded"),
            "buyerId",
            RawBson::Null,
        ),
        without(&payment_doc(7, "30", "USD", "funded"), "buyerId"),
        payment_doc(8, "30", "GBP", "funded"),
        payment_doc(9, "10", "USD", "funded"),
    ];
    insert(db, "payments", payments).await;

    let entries = vec![
        // Payment 1: deposited, an AML fee, the rest refunded and paid out to the buyer.
        entry_doc(101, 1, "deposit", "100", 1),
        entry_doc(102, 1, "aml_fee", d128("1.00"), 2),
        entry_doc(103, 1, "refund", 99_i32, 3),
        with(entry_doc(104, 1, "payout", "99", 4), "account", "buyer"),
        // Payment 2: a fee stored negative (2020), released and paid out to the seller;
        // balanceAfter right, wrong, and not even money: carried, never trusted.
        with(
            entry_doc(201, 2, "deposit", "200", 5),
            "balanceAfter",
            "200.00",
        ),
        with(
            entry_doc(202, 2, "fee", -4_i32, 6),
            "balanceAfter",
            d128("999"),
        ),
        with(
            entry_doc(203, 2, "release", "196", 7),
            "balanceAfter",
            "n/a",
        ),
        with(
            entry_doc(204, 2, "payout", d128("196"), 8),
            "account",
            "seller",
        ),
        // Payment 3: debit adjustments of its escrow, seller, platform fees and buyer
        // (that one stored negative).
        entry_doc(301, 3, "deposit", "50", 9),
        with(
            with(
                entry_doc(302, 3, "adjustment", "5", 10),
                "direction",
                "debit",
            ),
            "account",
            "escrow",
        ),
        entry_doc(303, 3, "release", "45", 11),
        with(
            with(
                entry_doc(304, 3, "adjustment", "10", 12),
                "direction",
                "debit",
            ),
            "account",
            "seller",
        ),
        with(
            with(
                entry_doc(305, 3, "adjustment", 2_i64, 13),
                "direction",
                "debit",
            ),
            "account",
            "platform",
        ),
        with(
            with(
                entry_doc(306, 3, "adjustment", -1.5, 14),
                "direction",
                "debit",
            ),
            "account",
            "buyer",
        ),
        // Payment 4 (USDT, lower-case currency on the entry).
        replace(
            &entry_doc(401, 4, "deposit", d128("12.345678"), 15),
            "currency",
            "usdt",
        ),
        // Payment 5 was rejected (null sellerId): its deposit goes to suspense.
        entry_doc(501, 5, "deposit", "30", 16),
        // Payment 9: one good deposit, then the rejects.
        entry_doc(901, 9, "deposit", "10", 17),
        entry_doc(902, 9, "deposit", 0_i32, 18),
        entry_doc(903, 9, "deposit", "-10", 19),
        with(
            with(
                entry_doc(904, 9, "adjustment", d128("-3"), 20),
                "direction",
                "credit",
            ),
            "account",
            "escrow",
        ),
        replace(
            &entry_doc(905, 9, "deposit", "10", 21),
            "paymentId",
            "pay_9",
        ),
        replace(&entry_doc(906, 9, "deposit", "10", 22), "currency", "GBP"),
        entry_doc(907, 9, "release", "0.00", 23),
    ];
    insert(db, "fundsledgerentries", entries).await;

    let disputes = vec![
        // Resolved, with evidence of two types.
        rawdoc! {
            "_id": oid(70_001), "paymentId": oid(2), "purchaseRequestId": oid(1002),
            "openedBy": oid(BUYER), "openedByRole": "buyer", "reason": "not_as_described",
            "description": "scratched", "status": "resolved", "priority": "high",
            "adminId": oid(9003),
            "evidence": [
                { "_id": oid(71_001), "submittedBy": oid(BUYER), "type": "image",
                  "url": "https://files.example/1.png", "description": "the scratch",
                  "submittedAt": at(21, 1) },
                { "_id": oid(71_002), "submittedBy": oid(SELLER), "type": "text",
                  "description": "it left us intact", "submittedAt": at(21, 2) },
            ],
            "messages": [],
            "timeline": [
                { "status": "open", "at": at(21, 0), "by": oid(BUYER) },
                { "status": "resolved", "at": at(22, 0), "by": oid(9003), "note": "photos checked" },
            ],
            "resolution": { "outcome": "release_to_seller", "resolvedBy": oid(9003), "resolvedAt": at(22, 0) },
            "createdAt": at(21, 0), "updatedAt": at(22, 0),
        },
        // An empty timeline (before the hook existed): imports, listed.
        rawdoc! {
            "_id": oid(70_002), "paymentId": oid(1), "purchaseRequestId": oid(1001),
            "openedBy": oid(BUYER), "openedByRole": "buyer", "reason": "other",
            "description": "old", "status": "closed", "evidence": [], "messages": [],
            "timeline": [], "createdAt": at(21, 0), "updatedAt": at(22, 0),
        },
        // No timeline at all.
        rawdoc! {
            "_id": oid(70_003), "paymentId": oid(3), "purchaseRequestId": oid(1003),
            "openedBy": oid(SELLER), "openedByRole": "seller", "reason": "payment_issue",
            "description": "older", "status": "withdrawn",
            "createdAt": at(21, 0), "updatedAt": at(22, 0),
        },
        // Still open at cutover, with a link as evidence: freezes payment 4.
        rawdoc! {
            "_id": oid(70_004), "paymentId": oid(4), "purchaseRequestId": oid(1004),
            "openedBy": oid(BUYER), "openedByRole": "buyer", "reason": "item_not_received",
            "description": "nothing came", "status": "open",
            "evidence": [
                { "_id": oid(71_003), "submittedBy": oid(BUYER), "type": "link",
                  "url": "https://tracking.example/42", "submittedAt": at(21, 3) },
            ],
            "messages": [],
            "timeline": [ { "status": "open", "at": at(21, 0), "by": oid(BUYER) } ],
            "createdAt": at(21, 0), "updatedAt": at(21, 3),
        },
    ];
    insert(db, "disputes", disputes).await;
}

#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn refunds_fees_payouts_adjustments_and_the_rejects_import_and_project_as_the_contract_says()
{
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("shapes").await;
    load_shapes(&mongo).await;
    let report_path = std::env::temp_dir().join(format!("import-shapes-{}.json", Uuid::new_v4()));
    let report_arg = report_path.to_string_lossy().into_owned();

    ok(&import(
        &db,
        &name,
        &["payments", "--batch-size", "5", "--report", &report_arg],
    ));
    let report = read_report(&report_path);

    // Every reject, by id, with its code; nothing else rejected.
    let expected: BTreeMap<String, String> = [
        (5, "missing_field"),
        (6, "missing_field"),
        (7, "missing_field"),
        (8, "unknown_currency"),
        (902, "zero_amount"),
        (903, "negative_amount"),
        (904, "negative_amount"),
        (905, "payment_id_not_object_id"),
        (906, "unknown_currency"),
        (907, "zero_amount"),
    ]
    .into_iter()
    .map(|(n, c)| (hex(n), c.to_owned()))
    .collect();
    assert_eq!(rejects_of(&report), expected, "{report:#}");
    // The field each reject names.
    let fields: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT object_id, field FROM legacy_import.rejects WHERE object_id = ANY($1) ORDER BY object_id",
    )
    .bind([5, 6, 7, 905].map(hex).to_vec())
    .fetch_all(&db.admin)
    .await
    .expect("reject fields");
    assert_eq!(
        fields,
        vec![
            (hex(5), Some("sellerId".to_owned())),
            (hex(6), Some("buyerId".to_owned())),
            (hex(7), Some("buyerId".to_owned())),
            (hex(905), Some("paymentId".to_owned())),
        ]
    );
    // Every anomaly, by id; the payments agree with their legacy status (payment 4's
    // `disputed` is compared once disputes are imported).
    let expected: BTreeMap<String, Vec<String>> = [
        (202, "sign_dropped"),
        (306, "sign_dropped"),
        (501, "entry_of_rejected_payment"),
    ]
    .into_iter()
    .map(|(n, k)| (hex(n), vec![k.to_owned()]))
    .collect();
    assert_eq!(anomalies_of(&report), expected, "{report:#}");
    // An entry of a rejected payment is listed with the reason its payment was rejected.
    let why = report["anomalies"]["entry_of_rejected_payment"][0]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("missing_field") && why.contains("sellerId"),
        "{why}"
    );

    // The events: each payment's import then its entries, in `_id` order.
    let entry = "LedgerEntryImported";
    for (p, entries) in [(1, 4), (2, 4), (3, 6), (4, 1), (9, 1)] {
        let mut want = vec!["PaymentImported".to_owned()];
        want.extend(std::iter::repeat_n(entry.to_owned(), entries));
        assert_eq!(
            stream_types(&db, payment_uuid(p)).await,
            want,
            "payment {p}"
        );
    }
    for p in [5, 6, 7, 8] {
        assert!(
            stream_types(&db, payment_uuid(p)).await.is_empty(),
            "payment {p}"
        );
    }

    // Postings to the right accounts with the exact amounts.
    let stripe = "external:stripe";
    let cases: Vec<(u32, u32, Legs)> = vec![
        (101, 1, legs(&[(stripe, "-100"), (&escrow(1), "100")])),
        (
            102,
            1,
            legs(&[(&escrow(1), "-1"), ("platform:aml_fees", "1")]),
        ),
        (103, 1, legs(&[(&escrow(1), "-99"), (&buyer(), "99")])),
        (104, 1, legs(&[(&buyer(), "-99"), (stripe, "99")])),
        (201, 2, legs(&[(stripe, "-200"), (&escrow(2), "200")])),
        (202, 2, legs(&[(&escrow(2), "-4"), ("platform:fees", "4")])),
        (203, 2, legs(&[(&escrow(2), "-196"), (&seller(), "196")])),
        (204, 2, legs(&[(&seller(), "-196"), (stripe, "196")])),
        (301, 3, legs(&[(stripe, "-50"), (&escrow(3), "50")])),
        (
            302,
            3,
            legs(&[(&escrow(3), "-5"), ("platform:adjustments", "5")]),
        ),
        (303, 3, legs(&[(&escrow(3), "-45"), (&seller(), "45")])),
        (
            304,
            3,
            legs(&[(&seller(), "-10"), ("platform:adjustments", "10")]),
        ),
        (
            305,
            3,
            legs(&[("platform:fees", "-2"), ("platform:adjustments", "2")]),
        ),
        (
            306,
            3,
            legs(&[(&buyer(), "-1.5"), ("platform:adjustments", "1.5")]),
        ),
        (
            401,
            4,
            legs(&[("external:trezor", "-12.345678"), (&escrow(4), "12.345678")]),
        ),
        (901, 9, legs(&[(stripe, "-10"), (&escrow(9), "10")])),
    ];
    for (n, p, want) in cases {
        let (stream, kind, postings, _) = event_of(&db, &hex(n)).await;
        assert_eq!(
            (stream, kind.as_str(), &postings),
            (payment_uuid(p), entry, &want),
            "entry {n}"
        );
    }
    // The entry of the rejected payment: a stream of its own, the sides only the payment
    // could name in suspense.
    let (stream, kind, postings, _) = event_of(&db, &hex(501)).await;
    assert_eq!(
        (stream, kind.as_str(), postings),
        (
            entry_uuid(501),
            entry,
            legs(&[("platform:suspense", "-30"), (&escrow(5), "30")])
        )
    );
    // Rejected entries wrote nothing.
    for n in [902, 903, 904, 905, 906, 907] {
        let written: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE metadata -> 'legacy' ->> 'object_id' = $1",
        )
        .bind(hex(n))
        .fetch_one(&db.admin)
        .await
        .expect("count");
        assert_eq!(written, 0, "entry {n}");
    }
    // Payouts name their party; balanceAfter is carried as read, never used.
    let (_, _, _, payout) = event_of(&db, &hex(104)).await;
    assert_eq!(payout["party"], "buyer");
    let (_, _, _, payout) = event_of(&db, &hex(204)).await;
    assert_eq!(payout["party"], "seller");
    let carried: Vec<Value> = {
        let mut out = Vec::new();
        for n in [201, 202, 203] {
            out.push(event_of(&db, &hex(n)).await.3);
        }
        out
    };
    // Money is carried by value (and the document verbatim), the rest as Extended JSON.
    assert_eq!(carried[0]["document"]["balanceAfter"], "200.00");
    let money = |v: &Value| v["balance_after"].as_str().map(dec);
    assert_eq!(money(&carried[0]), Some(dec("200.00")));
    assert_eq!(money(&carried[1]), Some(dec("999")));
    let carried: Vec<Value> = carried.iter().map(|v| v["balance_after"].clone()).collect();
    assert!(
        carried[2].as_str().is_some_and(|s| s.contains("n/a")),
        "{:?}",
        carried[2]
    );
    // rawAmount: carried verbatim (a full uint256), never computed with.
    let (imported,): (Value,) =
        sqlx::query_as("SELECT payload FROM events WHERE stream_id = $1 AND version = 1")
            .bind(payment_uuid(4))
            .fetch_one(&db.admin)
            .await
            .expect("payment 4's import");
    assert_eq!(
        imported["blockchain"]["rawAmount"], RAW_AMOUNT,
        "{imported:#}"
    );
    assert_eq!(imported["legacy_status"], "disputed");

    // Disputes: all four import; the open one freezes payment 4.
    ok(&import(
        &db,
        &name,
        &["disputes", "--batch-size", "2", "--report", &report_arg],
    ));
    let report = read_report(&report_path);
    let rejects = rejects_of(&report);
    for n in [70_001, 70_002, 70_003, 70_004] {
        assert_eq!(rejects.get(&hex(n)), None, "dispute {n}");
    }
    let anomalies = anomalies_of(&report);
    for n in [70_002, 70_003] {
        assert_eq!(
            anomalies.get(&hex(n)),
            Some(&vec!["empty_timeline".to_owned()]),
            "dispute {n}: {report:#}"
        );
    }
    for n in [70_001, 70_004, 4] {
        assert_eq!(anomalies.get(&hex(n)), None, "{n}: {report:#}");
    }
    for n in [70_001, 70_002, 70_003, 70_004] {
        assert_eq!(
            stream_types(&db, dispute_uuid(n)).await,
            vec!["DisputeImported".to_owned()],
            "dispute {n}"
        );
    }
    assert_eq!(
        stream_types(&db, payment_uuid(4)).await,
        vec!["PaymentImported", entry, "EscrowFrozen"]
    );
    let (payload,): (Value,) = sqlx::query_as(
        "SELECT payload FROM events WHERE stream_id = $1 AND event_type = 'DisputeImported'",
    )
    .bind(dispute_uuid(70_001))
    .fetch_one(&db.admin)
    .await
    .expect("dispute 1");
    let evidence = payload["evidence"].as_array().expect("evidence");
    assert_eq!(
        evidence
            .iter()
            .map(|e| (e["type"].clone(), e["url"].clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                Value::from("image"),
                Value::from("https://files.example/1.png")
            ),
            (Value::from("text"), Value::Null),
        ],
        "{payload:#}"
    );
    // The resolution moves no money.
    let dispute_postings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM postings p JOIN events e USING (position) \
         WHERE e.stream_type = 'dispute' OR e.event_type = 'EscrowFrozen'",
    )
    .fetch_one(&db.admin)
    .await
    .expect("dispute postings");
    assert_eq!(dispute_postings, 0);

    // The projections fold the imported history.
    ok(&e2e::run_binary(
        &["project"],
        &[("DATABASE_URL", db.url.as_str())],
    ));
    let z = "0";
    assert_eq!(
        projected(&db, 1).await,
        row("refunded", [z, z, "99", z, "1", z, "99"])
    );
    assert_eq!(
        projected(&db, 2).await,
        row("released", [z, "196", z, "4", z, "196", z])
    );
    assert_eq!(
        projected(&db, 3).await,
        row("released", [z, "45", z, z, z, z, z])
    );
    assert_eq!(
        projected(&db, 4).await,
        row("disputed", ["12.345678", z, z, z, z, z, z])
    );
    assert_eq!(
        projected(&db, 9).await,
        row("funded", ["10", z, z, z, z, z, z])
    );
    let missing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM finance.payments WHERE payment_id = ANY($1)")
            .bind([5, 6, 7, 8].map(payment_uuid).to_vec())
            .fetch_one(&db.admin)
            .await
            .expect("rejected payments");
    assert_eq!(missing, 0);
    let disputes: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "SELECT dispute_id, status, evidence_count::int FROM finance.disputes ORDER BY opened_at, dispute_id",
    )
    .fetch_all(&db.admin)
    .await
    .expect("projected disputes");
    let mut want = vec![
        (dispute_uuid(70_001), "resolved".to_owned(), 2),
        (dispute_uuid(70_002), "closed".to_owned(), 0),
        (dispute_uuid(70_003), "withdrawn".to_owned(), 0),
        (dispute_uuid(70_004), "open".to_owned(), 1),
    ];
    let mut got = disputes;
    want.sort();
    got.sort();
    assert_eq!(got, want);

    // verify agrees: every difference is explained by a listed reject or anomaly.
    for domain in ["payments", "disputes"] {
        let out = import(&db, &name, &["verify", domain]);
        assert!(
            out.status.success(),
            "verify {domain}: {:?}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_file(&report_path);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// Payments in the kill-and-resume data set (3 entries each, a dispute per 10).
const PAYMENTS: u64 = 2_000;

/// `_id` `base` with its machine bytes made `tag` (so it names another document) and its
/// time moved `secs` later (so it sorts that much later).
fn shifted(base: ObjectId, tag: u8, secs: u32) -> ObjectId {
    let mut b = base.bytes();
    let ts = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) + secs;
    b[..4].copy_from_slice(&ts.to_be_bytes());
    b[10] = tag;
    ObjectId::from_bytes(b)
}

fn id_of(d: &RawDocumentBuf) -> ObjectId {
    d.get_object_id("_id").expect("_id")
}

fn plus(d: bson::DateTime, secs: i64) -> bson::DateTime {
    bson::DateTime::from_millis(d.timestamp_millis() + secs * 1000)
}

/// `importer::sample`'s payments, entries and disputes, plus retried-webhook copies of
/// deposits (some a few entries later, some many batches later, some twice), entries
/// rejected or orphaned, disputes of a rejected payment and second open disputes of a
/// frozen payment.
#[allow(clippy::too_many_lines)]
async fn load_many(db: &Database) -> (usize, usize) {
    use importer::sample;
    let payments: Vec<RawDocumentBuf> = (0..PAYMENTS).map(sample::payment).collect();
    let mut entries = Vec::new();
    for i in 0..PAYMENTS {
        let [deposit, second, third] = sample::entries(i);
        let created = deposit.get_datetime("createdAt").expect("createdAt");
        if i % 13 == 4 {
            // A retried webhook: same reference, type and amount, minutes later. Its `_id`
            // is 4 minutes later (often the same batch) or 3 hours later (batches later).
            let secs = if i % 2 == 0 { 240 } else { 3 * 3600 };
            let copy = replace(&deposit, "_id", shifted(id_of(&deposit), 0xd1, secs));
            entries.push(replace(&copy, "createdAt", plus(created, 240)));
            if i % 26 == 17 {
                let copy = replace(&deposit, "_id", shifted(id_of(&deposit), 0xd2, 5 * 3600));
                entries.push(replace(&copy, "createdAt", plus(created, 480)));
            }
        }
        if i % 250 == 7 {
            let bad = replace(&second, "_id", shifted(id_of(&second), 0xe1, 1));
            entries.push(replace(&bad, "amount", 0_i32));
        }
        if i % 250 == 107 {
            let bad = replace(&second, "_id", shifted(id_of(&second), 0xe2, 1));
            entries.push(replace(&bad, "currency", "GBP"));
        }
        if i % 500 == 9 {
            let orphan = replace(&deposit, "_id", shifted(id_of(&deposit), 0xe3, 2));
            let orphan = replace(&orphan, "paymentId", shifted(id_of(&deposit), 0xe4, 0));
            entries.push(replace(&orphan, "reference", format!("orphan-{i}")));
        }
        entries.extend([deposit, second, third]);
    }
    let mut disputes: Vec<RawDocumentBuf> = (0..PAYMENTS / sample::PAYMENTS_PER_DISPUTE)
        .map(sample::dispute)
        .collect();
    // More disputes, so the disputes pass has many batches: resolved ones, open ones that
    // freeze their payment, a second open one of a frozen payment (not frozen again), and
    // one of a rejected payment.
    let resolved = sample::dispute(1);
    let open = sample::dispute(5);
    for i in 0..PAYMENTS {
        let template = if i % 25 == 1 || i % 1000 == 150 {
            &open
        } else if i % 3 == 0 || i == 1999 {
            &resolved
        } else {
            continue;
        };
        let pid = id_of(&sample::payment(i));
        let d = replace(template, "_id", shifted(pid, 0xf1, 2 * 86_400 + 30));
        disputes.push(replace(&d, "paymentId", pid));
    }
    let counts = (entries.len(), disputes.len());
    insert(db, "payments", payments).await;
    insert(db, "fundsledgerentries", entries).await;
    insert(db, "disputes", disputes).await;
    counts
}

async fn reject_rows(db: &TestDb) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT collection, object_id, code FROM legacy_import.rejects ORDER BY 1, 2, 3")
        .fetch_all(&db.admin)
        .await
        .expect("rejects")
}

async fn anomaly_rows(db: &TestDb) -> Vec<(String, String, String, String)> {
    sqlx::query_as(
        "SELECT collection, object_id, kind, detail FROM legacy_import.anomalies ORDER BY 1, 2, 3, 4",
    )
    .fetch_all(&db.admin)
    .await
    .expect("anomalies")
}

/// Starts `import <domain> --batch-size 50`, waits until `collection`'s checkpoint has
/// passed `documents`, SIGKILLs it, and checks it died in the middle of that pass.
async fn kill_during(db: &TestDb, mongo_db: &str, domain: &str, collection: &str, documents: i64) {
    let mut child = spawn_import(
        db,
        &[
            domain,
            "--batch-size",
            "50",
            "--mongo-uri",
            &mongo_uri(),
            "--mongo-db",
            mongo_db,
        ],
        Stdio::null(),
    );
    kill_at_checkpoint(
        db,
        &mut child,
        collection,
        documents,
        Duration::from_mins(2),
    )
    .await;
    let (documents_done, completed): (i64, bool) = sqlx::query_as(
        "SELECT documents, completed_at IS NOT NULL FROM legacy_import.checkpoints \
         WHERE collection = $1",
    )
    .bind(collection)
    .fetch_one(&db.admin)
    .await
    .expect("checkpoint after the kill");
    assert!(
        !completed && documents_done >= documents,
        "killed outside the {collection} pass: {documents_done} documents, completed {completed}"
    );
    let domain_done: Option<bool> = sqlx::query_scalar(
        "SELECT completed_at IS NOT NULL FROM legacy_import.domains WHERE domain = $1",
    )
    .bind(domain)
    .fetch_optional(&db.admin)
    .await
    .expect("domain");
    assert_eq!(domain_done, Some(false), "domain {domain} after the kill");
}

/// Both databases hold exactly the same events, rejects and anomalies, word for word.
async fn assert_same(whole: &TestDb, resumed: &TestDb) {
    let (a, b) = (event_rows(whole).await, event_rows(resumed).await);
    assert_eq!(a.len(), b.len(), "event counts");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    same_rows(
        "rejects",
        &reject_rows(whole).await,
        &reject_rows(resumed).await,
    );
    same_rows(
        "anomalies",
        &anomaly_rows(whole).await,
        &anomaly_rows(resumed).await,
    );
}

/// Equal row sets, or a failure naming only the rows that differ.
fn same_rows<T: Ord + std::fmt::Debug>(what: &str, whole: &[T], resumed: &[T]) {
    let a: std::collections::BTreeSet<&T> = whole.iter().collect();
    let b: std::collections::BTreeSet<&T> = resumed.iter().collect();
    let only_whole: Vec<_> = a.difference(&b).collect();
    let only_resumed: Vec<_> = b.difference(&a).collect();
    assert!(
        only_whole.is_empty() && only_resumed.is_empty() && whole.len() == resumed.len(),
        "{what}: only in the uninterrupted run: {only_whole:#?}\nonly in the resumed run: {only_resumed:#?}"
    );
}

async fn count_of(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&db.admin)
        .await
        .expect("count")
}

/// Killed in the entries pass, resumed: the same events, rejects and anomalies, word for
/// word. A retried webhook copied twice names both earlier copies in its detail, in `_id`
/// order whatever order the importer's lookup returns them in (physical rows differ once
/// a batch was killed).
#[tokio::test]
async fn a_run_killed_in_the_entries_pass_resumes_to_word_for_word_the_same_history() {
    let (mongo, name) = legacy_db("killentries").await;
    let (entries, _) = load_many(&mongo).await;
    let batch = ["--batch-size", "50"];

    let whole = TestDb::new().await;
    ok(&import(
        &whole,
        &name,
        &[&["payments"][..], &batch].concat(),
    ));
    // The data set holds what the resume must reproduce: retried webhooks listed across
    // batches, entry rejects, orphans and entries of a rejected payment.
    let kinds = |kind: &'static str| {
        format!("SELECT count(*) FROM legacy_import.anomalies WHERE kind = '{kind}'")
    };
    assert!(count_of(&whole, &kinds("duplicate_webhook")).await > 200);
    assert!(count_of(&whole, &kinds("orphan_entry")).await >= 4);
    assert!(count_of(&whole, &kinds("entry_of_rejected_payment")).await >= 3);
    assert!(
        count_of(
            &whole,
            "SELECT count(*) FROM legacy_import.rejects WHERE collection = 'fundsledgerentries'"
        )
        .await
            >= 16
    );

    let killed = TestDb::new().await;
    let entries = i64::try_from(entries).expect("entries");
    kill_during(
        &killed,
        &name,
        "payments",
        "fundsledgerentries",
        entries / 3,
    )
    .await;
    assert!(
        count_of(&killed, "SELECT count(*) FROM events").await
            < count_of(&whole, "SELECT count(*) FROM events").await
    );
    ok(&import(
        &killed,
        &name,
        &[&["payments"][..], &batch].concat(),
    ));
    assert_same(&whole, &killed).await;
    mongo.drop().await.expect("drop");
    whole.drop_db().await;
    killed.drop_db().await;
}

#[tokio::test]
async fn a_run_killed_in_import_disputes_resumes_to_the_events_rejects_and_anomalies_of_an_uninterrupted_one(
) {
    let (mongo, name) = legacy_db("killdisputes").await;
    let (_, disputes) = load_many(&mongo).await;
    let payments = ["payments", "--batch-size", "500"];
    let disputes_args = ["disputes", "--batch-size", "50"];

    let whole = TestDb::new().await;
    ok(&import(&whole, &name, &payments));
    ok(&import(&whole, &name, &disputes_args));
    let frozen = "SELECT count(*) FROM events WHERE event_type = 'EscrowFrozen'";
    assert!(
        count_of(&whole, frozen).await >= 90,
        "open disputes froze their payments"
    );
    assert!(
        count_of(
            &whole,
            "SELECT count(*) FROM legacy_import.anomalies WHERE kind = 'open_dispute_not_frozen'"
        )
        .await
            >= 2
    );
    assert!(
        count_of(
            &whole,
            "SELECT count(*) FROM legacy_import.rejects WHERE collection = 'disputes'"
        )
        .await
            >= 1
    );

    let killed = TestDb::new().await;
    ok(&import(&killed, &name, &payments));
    let disputes = i64::try_from(disputes).expect("disputes");
    kill_during(&killed, &name, "disputes", "disputes", disputes / 3).await;
    assert!(count_of(&killed, frozen).await < count_of(&whole, frozen).await);
    ok(&import(&killed, &name, &disputes_args));
    assert_same(&whole, &killed).await;
    mongo.drop().await.expect("drop");
    whole.drop_db().await;
    killed.drop_db().await;
}
