//! The cutover import end to end: generated legacy documents with exact BSON types loaded
//! into the real MongoDB-wire server (`TEST_MONGO_URI`, started by `scripts/test.sh`), the
//! real binary run against a fresh PostgreSQL database, and the events, rejects, anomalies,
//! report and `verify` checked. Duplicate keys, invalid UTF-8, Symbol and dates outside
//! chrono's range cannot be stored through the server (it normalizes or refuses them):
//! those traps are unit-tested on raw bytes in `importer`.

use std::process::Stdio;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, rawdoc, Decimal128, RawBson, RawDocumentBuf};
use chrono::{TimeZone, Utc};
use e2e::legacy::{
    event_rows, import, insert, kill_at_checkpoint, legacy_db, mongo_uri, ok, spawn_import,
    wait_for_checkpoint, without,
};
use e2e::TestDb;
use ledger::payment::{Payment, PaymentStatus};
use ledger::store::read_stream;
use mongodb::Database;
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

fn oid(n: u32) -> ObjectId {
    ObjectId::parse_str(format!("65a1b2c3d4e5f607{n:08x}")).expect("oid")
}

fn at(day: u32, minute: u32) -> bson::DateTime {
    bson::DateTime::from_millis(
        Utc.with_ymd_and_hms(2022, 3, day, 10, minute, 0)
            .single()
            .expect("date")
            .timestamp_millis(),
    )
}

fn payment_uuid(o: ObjectId) -> Uuid {
    importer::ids::Collection::Payments.uuid_of(&o.to_hex())
}

async fn event_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.admin)
        .await
        .expect("count events")
}

fn payment_doc(
    n: u32,
    amount: impl Into<RawBson>,
    currency: &str,
    status: &str,
    day: u32,
) -> RawDocumentBuf {
    rawdoc! {
        "_id": oid(n),
        "purchaseRequestId": oid(1000 + n),
        "sellerOfferId": RawBson::Null,
        "sellerId": oid(9001),
        "buyerId": oid(9002),
        "amount": amount.into(),
        "currency": currency,
        "provider": "stripe",
        "status": status,
        "createdAt": at(day, 0),
        "updatedAt": at(day, 30),
        "__v": 0_i32,
    }
}

fn entry_doc(
    n: u32,
    payment: Option<ObjectId>,
    kind: &str,
    amount: impl Into<RawBson>,
    minute: u32,
) -> RawDocumentBuf {
    let mut d = rawdoc! {
        "_id": oid(50_000 + n),
        "type": kind,
        "amount": amount.into(),
        "currency": "USD",
        "createdBy": "webhook:coinbase",
        "createdAt": at(20, minute),
    };
    match payment {
        Some(p) => d.append("paymentId", p),
        None => d.append("paymentId", RawBson::Null),
    }
    d
}

fn dec(s: &str) -> Decimal {
    ledger::money::parse_decimal_exact(s).expect("decimal")
}

fn d128(s: &str) -> Decimal128 {
    s.parse().expect("decimal128")
}

/// Every row of `legacy-mongo.md` the server can store, and the traps of the issue.
#[allow(clippy::too_many_lines)]
async fn load_traps(db: &Database) {
    let mut payments = vec![
        payment_doc(1, d128("1.05E+3"), "USD", "released", 1),
        payment_doc(2, "125.50", "usd", "funded", 2),
        payment_doc(3, 0.1, "USD", "pending", 3),
        payment_doc(4, 0.300_000_000_000_000_04, "USD", "funded", 4),
        payment_doc(5, 5_000_000_i64, "USDT", "funded", 5),
        payment_doc(6, f64::NAN, "USD", "funded", 6),
        payment_doc(7, f64::INFINITY, "USD", "funded", 6),
        payment_doc(8, "125.505", "USD", "funded", 6),
        payment_doc(9, d128("1E+40"), "USD", "funded", 6),
        payment_doc(10, -0.0, "USD", "funded", 6),
        payment_doc(11, 40_i32, "USD", "released", 7),
        payment_doc(14, "10.00", "USD", "funded", 8),
        // Rejected (too fine) with payment 14's purchase request.
        replace(
            &payment_doc(16, "1.001", "USD", "funded", 8),
            "purchaseRequestId",
            &oid(1014).into(),
        ),
    ];
    // Mixed references, a lower-case currency and no createdAt.
    let mut tmpl = rawdoc! {
        "_id": oid(12),
        "purchaseRequestId": "tmpl_8f2a",
        "sellerId": oid(9001).to_hex().to_uppercase(),
        "buyerId": oid(9002),
        "amount": d128("7.5"),
        "currency": "usdt",
        "provider": "manual",
        "status": "awaiting_deposit",
    };
    tmpl.append("metadata", rawdoc! { "note": "a\u{0}b\u{7}c", "ts": "x" });
    payments.push(tmpl);
    let mut ts = payment_doc(13, "1", "USD", "funded", 6);
    ts.append(
        "metadata",
        rawdoc! { "t": bson::Timestamp { time: 1, increment: 1 } },
    );
    payments.push(ts);
    let mut mk = payment_doc(15, "1", "USD", "funded", 6);
    mk.append("weird", RawBson::MinKey);
    payments.push(mk);
    insert(db, "payments", payments).await;

    let hex2 = oid(2).to_hex();
    let mut entries = vec![
        // payment 1: 1050 deposited, 1000 released, fee stored negative (2020): released.
        entry_doc(1, Some(oid(1)), "deposit", d128("1050"), 1),
        entry_doc(2, Some(oid(1)), "release", "1000.00", 2),
        entry_doc(3, Some(oid(1)), "fee", -50_i32, 3),
        // payment 11: deposit 40, release 60: negative escrow in history.
        entry_doc(4, Some(oid(11)), "deposit", 40_i32, 4),
        entry_doc(5, Some(oid(11)), "release", 60_i32, 5),
        // an orphan, an entry of a rejected payment, an adjustment of no payment.
        entry_doc(6, Some(oid(777)), "deposit", "3", 6),
        entry_doc(7, Some(oid(4)), "deposit", "0.3", 7),
        // a currency that is not its payment's: rejected.
        entry_doc(9, Some(oid(14)), "deposit", "1", 9),
    ];
    let mut adj = entry_doc(8, None, "adjustment", "2", 8);
    adj.append("direction", "credit");
    adj.append("account", "platform");
    entries.push(adj);
    // payment 2 by a 24-hex string, deposited twice by a retried webhook (2.00 vs 2.0 bytes).
    for (n, amount, minute) in [(10, d128("62.75"), 10), (11, d128("62.750"), 14)] {
        let mut e = entry_doc(n, None, "deposit", amount, minute);
        e.append("paymentId", hex2.clone());
        e.append("reference", "tx_dup");
        entries.push(without_null_payment(&e));
    }
    let eur = replace(&entries.remove(7), "currency", &"EUR".into());
    entries.push(eur);
    insert(db, "fundsledgerentries", entries).await;

    let body = format!("{}\u{0}\u{1b}[31m end", "m".repeat(1024 * 1024));
    let disputes = vec![
        rawdoc! {
            "_id": oid(70_001), "paymentId": oid(2), "purchaseRequestId": oid(1002),
            "openedBy": oid(9002), "openedByRole": "buyer", "reason": "not_as_described",
            "description": "scratched", "status": "open", "priority": "high",
            "adminId": RawBson::Null, "evidence": [], "timeline": [ { "status": "open", "at": at(21, 0), "by": oid(9002) } ],
            "messages": [ { "_id": oid(71_001), "author": oid(9002), "authorRole": "buyer", "body": body, "attachments": ["a.png"], "createdAt": at(21, 1) } ],
            "createdAt": at(21, 0), "updatedAt": at(21, 1),
        },
        rawdoc! {
            "_id": oid(70_002), "purchaseRequestId": oid(1001),
            "openedBy": oid(9002), "openedByRole": "buyer", "reason": "fraud",
            "description": "old one", "status": "resolved", "evidence": [], "messages": [],
            "timeline": [ { "status": "open", "at": at(21, 0), "by": "system" }, { "status": "resolved", "at": at(22, 0), "by": "system" } ],
            "resolution": { "outcome": "release_to_seller", "resolvedBy": oid(9003), "resolvedAt": at(22, 0) },
            "createdAt": at(21, 0), "updatedAt": at(22, 0),
        },
        rawdoc! {
            "_id": oid(70_003), "paymentId": oid(888), "openedBy": oid(9002), "openedByRole": "seller",
            "reason": "other", "description": "lost", "status": "closed", "createdAt": at(21, 0),
        },
        rawdoc! {
            "_id": oid(70_004), "paymentId": oid(5), "openedBy": oid(9002), "openedByRole": "buyer",
            "reason": "payment_issue", "description": "late", "status": "under_review",
            "timeline": [ { "status": "open", "at": at(21, 0), "by": "system" } ],
            "createdAt": at(21, 0), "updatedAt": at(21, 5),
        },
    ];
    let mut disputes = disputes;
    // No paymentId: the purchase request of an imported and a rejected payment
    // (ambiguous), of a rejected one only, and of none.
    for (n, request) in [(70_005, 1014), (70_006, 1008), (70_007, 5555)] {
        disputes.push(rawdoc! {
            "_id": oid(n), "purchaseRequestId": oid(request), "openedBy": oid(9002),
            "openedByRole": "buyer", "reason": "other", "description": "old", "status": "closed",
            "evidence": [], "messages": [],
            "timeline": [ { "status": "open", "at": at(21, 0), "by": "system" }, { "status": "closed", "at": at(22, 0), "by": "system" } ],
            "createdAt": at(21, 0), "updatedAt": at(22, 0),
        });
    }
    insert(db, "disputes", disputes).await;
}

fn replace(d: &RawDocumentBuf, key: &str, value: &RawBson) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    for item in d {
        let (k, v) = item.expect("field");
        if k == key {
            out.append(k, value.clone());
        } else {
            out.append(k, v.to_raw_bson());
        }
    }
    out
}

/// Drops the `paymentId: null` an entry was built with when a later `paymentId` is set.
fn without_null_payment(d: &RawDocumentBuf) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    for item in d {
        let (k, v) = item.expect("field");
        if !(k == "paymentId" && matches!(v, bson::RawBsonRef::Null)) {
            out.append(k, v.to_raw_bson());
        }
    }
    out
}

fn codes(report: &Value, section: &str) -> Vec<String> {
    report[section]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn ids_of(report: &Value, section: &str, code: &str) -> Vec<String> {
    report[section][code]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["object_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn the_traps_import_as_the_contract_says_and_verify_catches_a_change() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("traps").await;
    load_traps(&mongo).await;

    // Disputes before payments: refused.
    let refused = import(&db, &name, &["disputes"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("payments domain has not finished"));

    let report_path = std::env::temp_dir().join(format!("import-{}.json", Uuid::new_v4()));
    let report_arg = report_path.to_string_lossy().into_owned();
    let text = ok(&import(
        &db,
        &name,
        &["payments", "--batch-size", "4", "--report", &report_arg],
    ));
    assert!(text.contains("rejected, by reason"), "{text}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");

    let rejected = codes(&report, "rejected");
    for code in [
        "float_noise",
        "not_a_number",
        "infinite",
        "too_fine",
        "out_of_range",
        "negative_zero",
        "unsupported_bson_type",
        "currency_mismatch",
    ] {
        assert!(
            rejected.contains(&code.to_owned()),
            "{code} not in {rejected:?}"
        );
    }
    assert_eq!(
        ids_of(&report, "rejected", "unsupported_bson_type").len(),
        2
    );
    let anomalies = codes(&report, "anomalies");
    for kind in [
        "ambiguous_reference",
        "created_at_from_object_id",
        "sign_dropped",
        "orphan_entry",
        "entry_of_rejected_payment",
        "duplicate_webhook",
        "negative_escrow",
        "status_disagreement",
        "replaced_nul",
    ] {
        assert!(
            anomalies.contains(&kind.to_owned()),
            "{kind} not in {anomalies:?}"
        );
    }
    assert_eq!(ids_of(&report, "anomalies", "duplicate_webhook").len(), 2);
    assert!(ids_of(&report, "anomalies", "negative_escrow").contains(&oid(11).to_hex()));
    // funded with no deposit: its history says otherwise.
    assert!(ids_of(&report, "anomalies", "status_disagreement").contains(&oid(5).to_hex()));
    let entry_of_rejected = &report["anomalies"]["entry_of_rejected_payment"][0]["detail"];
    assert!(entry_of_rejected
        .as_str()
        .unwrap_or("")
        .contains("float_noise"));

    // The money as history says: payment 1 released, its escrow back to zero.
    let pool = db.service_pool(2).await;
    let p1 = Payment::from_history(
        &read_stream(&pool, payment_uuid(oid(1)))
            .await
            .expect("read"),
    )
    .expect("fold");
    assert_eq!(p1.status, PaymentStatus::Released);
    assert_eq!(
        (p1.deposited, p1.released, p1.fees, p1.held),
        (dec("1050"), dec("1000"), dec("50"), Decimal::ZERO)
    );
    assert_eq!(p1.version, 4);
    let p11 = Payment::from_history(
        &read_stream(&pool, payment_uuid(oid(11)))
            .await
            .expect("read"),
    )
    .expect("fold");
    assert_eq!(p11.held, dec("-20"));
    let p2 = Payment::from_history(
        &read_stream(&pool, payment_uuid(oid(2)))
            .await
            .expect("read"),
    )
    .expect("fold");
    assert_eq!((p2.deposited, p2.excess), (dec("125.5"), Decimal::ZERO));
    assert_eq!(p2.status, PaymentStatus::Funded);
    // Timestamps are the legacy ones; the metadata names the source and its digest.
    let (occurred, meta): (chrono::DateTime<Utc>, Value) = sqlx::query_as(
        "SELECT occurred_at, metadata FROM events WHERE stream_id = $1 AND version = 2",
    )
    .bind(payment_uuid(oid(1)))
    .fetch_one(&db.admin)
    .await
    .expect("event");
    assert_eq!(
        occurred,
        Utc.with_ymd_and_hms(2022, 3, 20, 10, 1, 0)
            .single()
            .expect("t")
    );
    assert_eq!(meta["legacy"]["collection"], "fundsledgerentries");
    assert_eq!(meta["legacy"]["digest"].as_str().map(str::len), Some(64));
    // The orphan's sides that only its payment could name are in suspense.
    let suspense: Decimal = sqlx::query_scalar(
        "SELECT coalesce(sum(amount), 0) FROM postings WHERE account = 'platform:suspense'",
    )
    .fetch_one(&db.admin)
    .await
    .expect("suspense");
    assert_eq!(suspense, dec("-3.3"));
    // Every event balances; the store verifies.
    ok(&e2e::run_binary(
        &["verify"],
        &[("DATABASE_URL", db.url.as_str())],
    ));

    // Disputes: the open one freezes its payment; the one without paymentId is found.
    let text = ok(&import(&db, &name, &["disputes", "--report", &report_arg]));
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    assert!(
        ids_of(&report, "rejected", "payment_not_found").contains(&oid(70_003).to_hex()),
        "{text}"
    );
    assert_eq!(
        [
            ids_of(&report, "rejected", "ambiguous_payment"),
            ids_of(&report, "rejected", "payment_not_imported"),
        ],
        [vec![oid(70_005).to_hex()], vec![oid(70_006).to_hex()]],
        "{text}"
    );
    assert!(
        ids_of(&report, "rejected", "payment_not_found").contains(&oid(70_007).to_hex()),
        "{text}"
    );
    assert!(
        ids_of(&report, "anomalies", "payment_found_by_purchase_request")
            .contains(&oid(70_002).to_hex())
    );
    assert!(ids_of(&report, "anomalies", "timeline_disagreement").contains(&oid(70_004).to_hex()));
    assert!(ids_of(&report, "anomalies", "replaced_nul").contains(&oid(70_001).to_hex()));
    let p2 = Payment::from_history(
        &read_stream(&pool, payment_uuid(oid(2)))
            .await
            .expect("read"),
    )
    .expect("fold");
    assert_eq!(p2.status, PaymentStatus::Disputed);
    let body: String = sqlx::query_scalar(
        "SELECT payload -> 'messages' -> 0 ->> 'body' FROM events WHERE event_type = 'DisputeImported' \
         AND stream_id = $1",
    )
    .bind(importer::ids::Collection::Disputes.uuid_of(&oid(70_001).to_hex()))
    .fetch_one(&db.admin)
    .await
    .expect("message");
    assert!(body.len() > 1024 * 1024 && body.contains('\u{fffd}') && body.contains('\u{1b}'));

    // A second run writes nothing.
    let before = event_count(&db).await;
    ok(&import(&db, &name, &["payments", "--report", &report_arg]));
    ok(&import(&db, &name, &["disputes"]));
    assert_eq!(event_count(&db).await, before);
    let again: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    assert_eq!(again["events_written"], 0);

    // The projectors fold the imported history; verify reads their buckets, agrees, then
    // names the bucket and the payment once MongoDB changes.
    ok(&e2e::run_binary(
        &["project"],
        &[("DATABASE_URL", db.url.as_str())],
    ));
    // A rebuild checks its tables against the store before it swaps them in: the orphan
    // entries' escrow accounts, which no payment row owns, are no difference.
    let rebuilt = ok(&e2e::run_binary(
        &["rebuild", "--all"],
        &[("DATABASE_URL", db.url.as_str())],
    ));
    assert!(!rebuilt.contains("FAILED"), "{rebuilt}");
    let verify = |domain: &str| import(&db, &name, &["verify", domain]);
    let out = verify("payments");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("finance.reconciliation_buckets"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    ok(&verify("disputes"));
    mongo
        .collection::<RawDocumentBuf>("payments")
        .update_one(doc! { "_id": oid(3) }, doc! { "$set": { "amount": 0.2 } })
        .await
        .expect("update");
    let out = verify("payments");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("bucket") && stdout.contains("(stripe, USD, 2022-03-03)"),
        "{stdout}"
    );
    assert!(stdout.contains(&oid(3).to_hex()), "{stdout}");
    // An entry changed after import: named, and its payment's money difference is not
    // explained by the anomaly listed for another entry of that payment (the fee's).
    mongo
        .collection::<RawDocumentBuf>("payments")
        .update_one(doc! { "_id": oid(3) }, doc! { "$set": { "amount": 0.1 } })
        .await
        .expect("update back");
    ok(&verify("payments"));
    mongo
        .collection::<RawDocumentBuf>("fundsledgerentries")
        .update_one(
            doc! { "_id": oid(50_002) },
            doc! { "$set": { "amount": "990.00" } },
        )
        .await
        .expect("update entry");
    let out = verify("payments");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let entry = oid(50_002).to_hex();
    let line = |check: &str, id: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(check) && l.contains(id))
            .map_or_else(
                || panic!("no {check} line for {id} in\n{stdout}"),
                str::to_owned,
            )
    };
    assert!(line("changed", &entry).ends_with("UNEXPLAINED"), "{stdout}");
    let money = line("payment_money", &oid(1).to_hex());
    assert!(
        money.contains("release") && money.ends_with("UNEXPLAINED"),
        "{money}"
    );
    // A payments projector that has not caught up fails verify rather than being skipped.
    sqlx::query(
        "UPDATE projection.projector_state SET checkpoint_tx = 0, checkpoint_position = 0 \
         WHERE projector = 'payments'",
    )
    .execute(&db.admin)
    .await
    .expect("rewind");
    let out = import(
        &db,
        &name,
        &["verify", "payments", "--wait-projections", "1"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("projections") && l.ends_with("UNEXPLAINED")),
        "{stdout}"
    );
    assert!(!stdout.contains("\nbucket "), "{stdout}");
    let _ = std::fs::remove_file(&report_path);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_reports_the_same() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("dry").await;
    load_traps(&mongo).await;
    let dry = ok(&import(&db, &name, &["payments", "--dry-run"]));
    assert_eq!(event_count(&db).await, 0);
    let rejects: i64 = sqlx::query_scalar("SELECT count(*) FROM legacy_import.rejects")
        .fetch_one(&db.admin)
        .await
        .expect("rejects");
    assert_eq!(rejects, 0);
    let real = ok(&import(&db, &name, &["payments"]));
    let body = |t: &str| t.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&dry), body(&real));
    assert!(dry.contains("DRY RUN"));
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// `_id`s that are no ObjectId are rejected on every run, the resumed one too: a resume
/// reads `_id > last`, which matches ObjectIds only, and would pass over a boolean or a
/// date `_id` (they sort after every ObjectId) without importing or rejecting it.
#[tokio::test]
async fn a_resumed_run_reads_the_documents_whose_id_is_no_object_id() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("idtypes").await;
    let with_id = |id: RawBson| replace(&payment_doc(1, "5", "USD", "pending", 1), "_id", &id);
    insert(
        &mongo,
        "payments",
        vec![
            payment_doc(1, "5", "USD", "pending", 1),
            payment_doc(2, "6", "USD", "pending", 1),
            with_id(RawBson::String("legacy-7".into())),
        ],
    )
    .await;
    ok(&import(&db, &name, &["payments"]));
    // Written after the first run: it resumes after payment 2.
    insert(
        &mongo,
        "payments",
        vec![
            payment_doc(3, "7", "USD", "pending", 1),
            with_id(RawBson::Boolean(true)),
            with_id(RawBson::DateTime(at(2, 0))),
        ],
    )
    .await;
    let out = ok(&import(&db, &name, &["payments"]));
    let bad: Vec<String> = sqlx::query_scalar(
        "SELECT object_id FROM legacy_import.rejects WHERE collection = 'payments' \
         AND code = 'bad_id' ORDER BY object_id",
    )
    .fetch_all(&db.admin)
    .await
    .expect("rejects");
    assert_eq!(bad.len(), 3, "{bad:?}\n{out}");
    assert!(bad.iter().any(|b| b.contains("legacy-7")), "{bad:?}");
    assert!(bad.iter().any(|b| b == "true"), "{bad:?}");
    assert!(bad.iter().any(|b| b.contains("$date")), "{bad:?}");
    let imported: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM legacy_import.id_map WHERE collection = 'payments'",
    )
    .fetch_one(&db.admin)
    .await
    .expect("id map");
    assert_eq!(imported, 3);
    // The parity check agrees: every document is imported or rejected.
    ok(&e2e::run_binary(
        &["project"],
        &[("DATABASE_URL", db.url.as_str())],
    ));
    let verify = ok(&import(&db, &name, &["verify", "payments"]));
    assert!(!verify.contains("imported +"), "{verify}");
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn retry_rejects_imports_a_fixed_document() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("retry").await;
    insert(
        &mongo,
        "payments",
        vec![
            payment_doc(1, "10.005", "USD", "pending", 1),
            payment_doc(2, "3", "USD", "pending", 1),
            payment_doc(3, "7.001", "USD", "funded", 1),
            payment_doc(4, "5.001", "USD", "released", 1),
        ],
    )
    .await;
    // Payment 3's deposit is imported into suspense while the payment is rejected, and
    // payment 4's payout to its seller (a payout names no escrow account: both its sides
    // are suspense).
    let mut payout = entry_doc(2, Some(oid(4)), "payout", "5", 3);
    payout.append("account", "seller");
    insert(
        &mongo,
        "fundsledgerentries",
        vec![entry_doc(1, Some(oid(3)), "deposit", "7", 2), payout],
    )
    .await;
    ok(&import(&db, &name, &["payments"]));
    let open = "SELECT count(*) FROM legacy_import.rejects WHERE resolved_at IS NULL \
                AND object_id NOT IN ('65a1b2c3d4e5f60700000003', '65a1b2c3d4e5f60700000004')";
    let count = |sql: &'static str| {
        let pool = db.admin.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    assert_eq!(count(open).await, 1);
    mongo
        .collection::<RawDocumentBuf>("payments")
        .update_one(
            doc! { "_id": oid(1) },
            doc! { "$set": { "amount": "10.01" } },
        )
        .await
        .expect("fix");
    for (n, amount) in [(3, "7"), (4, "5")] {
        mongo
            .collection::<RawDocumentBuf>("payments")
            .update_one(
                doc! { "_id": oid(n) },
                doc! { "$set": { "amount": amount } },
            )
            .await
            .expect("fix");
    }
    let text = ok(&import(&db, &name, &["payments", "--retry-rejects"]));
    assert!(text.contains("retry_rejects"), "{text}");
    assert_eq!(count(open).await, 0);
    // Payment 3 stays rejected: its money already sits in its escrow account and suspense.
    let (code, streams): (String, i64) = sqlx::query_as(
        "SELECT r.code, (SELECT count(*) FROM events WHERE stream_id = $2) \
         FROM legacy_import.rejects r WHERE r.object_id = $1 AND r.resolved_at IS NULL",
    )
    .bind(oid(3).to_hex())
    .bind(payment_uuid(oid(3)))
    .fetch_one(&db.admin)
    .await
    .expect("payment 3's reject");
    assert_eq!((code.as_str(), streams), ("entries_in_suspense", 0));
    // So does payment 4, whose only entry left no posting naming it.
    let code: String = sqlx::query_scalar(
        "SELECT code FROM legacy_import.rejects WHERE object_id = $1 AND resolved_at IS NULL",
    )
    .bind(oid(4).to_hex())
    .fetch_one(&db.admin)
    .await
    .expect("payment 4's reject");
    assert_eq!(code, "entries_in_suspense");
    let pool = db.service_pool(1).await;
    let p = Payment::from_history(
        &read_stream(&pool, payment_uuid(oid(1)))
            .await
            .expect("read"),
    )
    .expect("fold");
    assert_eq!(p.terms.map(|t| t.amount), Some(dec("10.01")));

    // The id map over HTTP, for every role.
    let server = e2e::server::Server::start(&db, &["--no-projectors"]);
    let hex = oid(1).to_hex();
    for token in [
        &server.tokens.coordinator,
        &server.tokens.admin,
        &server.tokens.finance,
    ] {
        let (status, body) = server
            .get(&format!("/v1/legacy/payments/{hex}"), token)
            .await;
        assert_eq!(status.as_u16(), 200, "{body}");
        assert_eq!(body["id"], payment_uuid(oid(1)).to_string());
        assert_eq!(body["stream_type"], "payment");
    }
    let f = &server.tokens.finance;
    let (status, body) = server
        .get(&format!("/v1/legacy/users/{}", oid(9001).to_hex()), f)
        .await;
    assert_eq!(
        (status.as_u16(), body["imported"].clone()),
        (200, Value::Bool(false))
    );
    let (status, _) = server
        .get("/v1/legacy/payments/65a1b2c3d4e5f60700000099", f)
        .await;
    assert_eq!(status.as_u16(), 404);
    let (status, _) = server.get("/v1/legacy/payments/nope", f).await;
    assert_eq!(status.as_u16(), 400);
    let (status, _) = server.get(&format!("/v1/legacy/orders/{hex}"), f).await;
    assert_eq!(status.as_u16(), 404);
    drop(server);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

async fn load_many(db: &Database, n: u32) {
    let payments = (1..=n)
        .map(|i| payment_doc(i, "100", "USD", "funded", 1 + i % 28))
        .collect();
    insert(db, "payments", payments).await;
    let entries = (1..=n)
        .map(|i| entry_doc(i, Some(oid(i)), "deposit", "100", i % 60))
        .collect();
    insert(db, "fundsledgerentries", entries).await;
}

/// A payment written while the entries pass runs is caught by the count of every
/// collection at the end of the run, not only the collection being read.
#[tokio::test]
async fn a_payment_written_during_the_entries_pass_is_reported_loudly() {
    let (mongo, name) = legacy_db("writers").await;
    load_many(&mongo, 3000).await;
    let db = TestDb::new().await;
    let report_path = std::env::temp_dir().join(format!("import-writers-{}.json", Uuid::new_v4()));
    let report_arg = report_path.to_string_lossy().into_owned();
    let child = spawn_import(
        &db,
        &[
            "payments",
            "--batch-size",
            "20",
            "--report",
            &report_arg,
            "--mongo-uri",
            &mongo_uri(),
            "--mongo-db",
            &name,
        ],
        Stdio::piped(),
    );
    wait_for_checkpoint(&db, "fundsledgerentries", 100, Duration::from_mins(1)).await;
    insert(
        &mongo,
        "payments",
        vec![payment_doc(99_999, "5", "USD", "pending", 1)],
    )
    .await;
    let finished_entries: bool = sqlx::query_scalar(
        "SELECT completed_at IS NOT NULL FROM legacy_import.checkpoints \
         WHERE collection = 'fundsledgerentries'",
    )
    .fetch_one(&db.admin)
    .await
    .expect("checkpoint");
    let out = child.wait_with_output().expect("wait");
    // Done but not final: exit 3, so that a cutover script stops there.
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!finished_entries, "the entries pass ended before the write");
    // The payments pass's own count at its end runs in the background while the entries
    // pass goes on, so it may see the write first (then it says so, and the run's count
    // at the end does not repeat it).
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("WARNING: payments: 3000 documents")
                && l.contains(" 3001 ")
                && l.ends_with(
                    "LEGACY WRITERS ARE STILL RUNNING; stop them and run the import again"
                )),
        "{stdout}"
    );
    // The counts in the background still fill the figures of each pass.
    let report = report_of(&report_path);
    let figures = |i: usize, field: &str| report["collections"][i][field].as_u64();
    assert_eq!(report["collections"][0]["collection"], "payments");
    assert_eq!(figures(0, "documents_at_start"), Some(3000), "{report:#}");
    assert_eq!(figures(0, "read"), Some(3000), "{report:#}");
    assert_eq!(report["collections"][1]["collection"], "fundsledgerentries");
    assert_eq!(figures(1, "documents_at_start"), Some(3000), "{report:#}");
    assert_eq!(figures(1, "documents_at_end"), Some(3000), "{report:#}");
    let _ = std::fs::remove_file(&report_path);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

#[tokio::test]
async fn a_killed_run_resumes_to_exactly_the_events_of_an_uninterrupted_one() {
    let (mongo, name) = legacy_db("resume").await;
    load_many(&mongo, 3000).await;

    let whole = TestDb::new().await;
    ok(&import(&whole, &name, &["payments", "--batch-size", "100"]));

    let killed = TestDb::new().await;
    // This run names its database in the URI alone (no --mongo-db), as operators write it.
    let uri = format!("{}/{name}", mongo_uri().trim_end_matches('/'));
    let mut child = spawn_import(
        &killed,
        &["payments", "--batch-size", "20", "--mongo-uri", &uri],
        Stdio::null(),
    );
    kill_at_checkpoint(
        &killed,
        &mut child,
        "payments",
        400,
        Duration::from_secs(20),
    )
    .await;
    assert!(event_count(&killed).await < 6000);
    ok(&import(&killed, &name, &["payments", "--batch-size", "50"]));

    let a = event_rows(&whole).await;
    let b = event_rows(&killed).await;
    assert_eq!(a.len(), 6000);
    assert_eq!(a, b);
    // And a run after success writes nothing.
    ok(&import(&killed, &name, &["payments"]));
    assert_eq!(event_count(&killed).await, 6000);
    mongo.drop().await.expect("drop");
    whole.drop_db().await;
    killed.drop_db().await;
}

fn report_of(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("report")).expect("json")
}

/// More rejects and anomalies than a run keeps in memory: the text counts all and lists a
/// sample, the JSON file lists every id (streamed from the tables), in a dry run too.
#[tokio::test]
async fn the_report_file_lists_every_id_past_the_sample() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("report").await;
    let sample = importer::report::SAMPLE;
    let mut payments = Vec::new();
    // Not a number: rejected.
    for n in 0..sample + 7 {
        payments.push(payment_doc(
            200 + u32::try_from(n).expect("n"),
            f64::NAN,
            "USD",
            "funded",
            9,
        ));
    }
    // Released with nothing deposited: imported, status disagreeing with the money.
    for n in 0..sample + 12 {
        payments.push(payment_doc(
            400 + u32::try_from(n).expect("n"),
            "10.00",
            "USD",
            "released",
            9,
        ));
    }
    insert(&mongo, "payments", payments).await;

    let dry_path = std::env::temp_dir().join(format!("import-dry-{}.json", Uuid::new_v4()));
    let live_path = std::env::temp_dir().join(format!("import-{}.json", Uuid::new_v4()));
    let dry_arg = dry_path.to_string_lossy().into_owned();
    let live_arg = live_path.to_string_lossy().into_owned();
    let dry_text = ok(&import(
        &db,
        &name,
        &[
            "payments",
            "--dry-run",
            "--batch-size",
            "5",
            "--report",
            &dry_arg,
        ],
    ));
    assert_eq!(event_count(&db).await, 0, "a dry run writes nothing");
    let text = ok(&import(
        &db,
        &name,
        &["payments", "--batch-size", "5", "--report", &live_arg],
    ));
    assert!(
        text.contains(&format!("  not_a_number: {}\n", sample + 7)),
        "{text}"
    );
    assert!(text.contains("    ... 7 more"), "{text}");
    assert!(
        text.contains(&format!("  status_disagreement: {}\n", sample + 12)),
        "{text}"
    );
    assert!(text.contains("    ... 12 more"), "{text}");
    assert!(
        dry_text.contains(&format!("  not_a_number: {}\n", sample + 7)),
        "{dry_text}"
    );

    let live = report_of(&live_path);
    let dry = report_of(&dry_path);
    let expected: Vec<String> = (0..sample + 7)
        .map(|n| oid(200 + u32::try_from(n).expect("n")).to_hex())
        .collect();
    assert_eq!(ids_of(&live, "rejected", "not_a_number"), expected);
    assert_eq!(live["rejected_counts"]["not_a_number"], sample + 7);
    assert_eq!(
        ids_of(&live, "anomalies", "status_disagreement").len(),
        sample + 12
    );
    assert_eq!(live["anomaly_counts"]["status_disagreement"], sample + 12);
    assert_eq!(
        live["rejected"], dry["rejected"],
        "the dry run lists what the run does"
    );
    assert_eq!(live["anomalies"], dry["anomalies"]);
    assert_eq!(live["mode"], "import");
    assert_eq!(dry["dry_run"], true);
    let _ = std::fs::remove_file(&dry_path);
    let _ = std::fs::remove_file(&live_path);
}

/// A report file that cannot be written refuses the run before it imports anything, and a
/// finished run leaves its report whole under its name (written beside it, then renamed).
#[tokio::test]
async fn an_unwritable_report_path_fails_before_importing() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("report_path").await;
    insert(
        &mongo,
        "payments",
        vec![payment_doc(1, "10.00", "USD", "pending", 1)],
    )
    .await;
    let missing = std::env::temp_dir()
        .join(format!("no-such-dir-{}", Uuid::new_v4()))
        .join("r.json");
    let out = import(
        &db,
        &name,
        &["payments", "--report", &missing.to_string_lossy()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not write the report"), "{stderr}");
    assert_eq!(event_count(&db).await, 0, "nothing imported");
    // A folder (its `.partial` sibling could be made, the rename into it could not).
    let folder = std::env::temp_dir();
    let out = import(
        &db,
        &name,
        &["payments", "--report", &folder.to_string_lossy()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("takes a file's path"), "{stderr}");
    assert_eq!(event_count(&db).await, 0, "nothing imported");

    let path = std::env::temp_dir().join(format!("import-ok-{}.json", Uuid::new_v4()));
    ok(&import(
        &db,
        &name,
        &["payments", "--report", &path.to_string_lossy()],
    ));
    let mut partial = path.clone().into_os_string();
    partial.push(".partial");
    assert!(
        !std::path::Path::new(&partial).exists(),
        "renamed into place"
    );
    assert_eq!(report_of(&path)["collections"][0]["imported"], 1);
    let _ = std::fs::remove_file(&path);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// A reject explains its document's differences only while the document is the one that
/// was rejected: changed since (a zero deposit made into 5,000 on a payment that does not
/// exist), verify names it and fails; deleted, `--retry-rejects` closes its reject and
/// verify agrees again.
#[tokio::test]
async fn verify_names_a_rejected_document_changed_since_and_a_retry_closes_a_deleted_one() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("rejchanged").await;
    load_funded_payment(&mongo, vec![entry_doc(2, Some(oid(1)), "deposit", "0", 3)]).await;
    ok(&import(&db, &name, &["payments"]));
    ok(&e2e::run_binary(
        &["project"],
        &[("DATABASE_URL", db.url.as_str())],
    ));
    let verify = || import(&db, &name, &["verify", "payments"]);
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let entries = mongo.collection::<RawDocumentBuf>("fundsledgerentries");
    entries
        .update_one(
            doc! { "_id": oid(50_002) },
            doc! { "$set": { "amount": d128("5000"), "paymentId": oid(779) } },
        )
        .await
        .expect("update");
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.contains("65a1b2c3d4e5f6070000c352")
            && l.contains("changed since it was rejected")
            && l.contains("UNEXPLAINED")),
        "{text}"
    );

    entries
        .delete_one(doc! { "_id": oid(50_002) })
        .await
        .expect("delete");
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("absent now"), "{text}");
    let retried = ok(&import(&db, &name, &["payments", "--retry-rejects"]));
    assert!(retried.contains("no longer in MongoDB"), "{retried}");
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// An imported dispute whose document no longer parses, or is gone, is named by
/// `verify disputes` (its history has no source any more), as payments and entries are.
#[tokio::test]
async fn verify_disputes_names_an_imported_dispute_made_invalid_or_deleted() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("dispgone").await;
    load_funded_payment(&mongo, Vec::new()).await;
    let dispute = |n: u32| {
        rawdoc! {
            "_id": oid(n), "paymentId": oid(1), "purchaseRequestId": oid(1001),
            "openedBy": oid(9002), "openedByRole": "buyer", "reason": "other",
            "description": "late", "status": "closed",
            "timeline": [ { "status": "open", "at": at(21, 0), "by": "system" } ],
            "createdAt": at(21, 0), "updatedAt": at(21, 5),
        }
    };
    insert(&mongo, "disputes", vec![dispute(70_001), dispute(70_002)]).await;
    ok(&import(&db, &name, &["payments"]));
    ok(&import(&db, &name, &["disputes"]));
    let verify = || import(&db, &name, &["verify", "disputes"]);
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let disputes = mongo.collection::<RawDocumentBuf>("disputes");
    disputes
        .update_one(
            doc! { "_id": oid(70_001) },
            doc! { "$set": { "status": "reopened" } },
        )
        .await
        .expect("update");
    disputes
        .delete_one(doc! { "_id": oid(70_002) })
        .await
        .expect("delete");
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    for n in [70_001, 70_002] {
        let hex = oid(n).to_hex();
        assert!(
            text.lines().any(|l| l.contains(&hex)
                && l.contains("absent or invalid now")
                && l.contains("UNEXPLAINED")),
            "{hex}: {text}"
        );
    }
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// Payment 1 (100 USD, funded) with its deposit of 100, and `entries` besides.
async fn load_funded_payment(mongo: &Database, entries: Vec<RawDocumentBuf>) {
    load_payment_1(mongo, "100", "funded", "100", entries).await;
}

/// Payment 1 (`amount` USD, legacy `status`) with a deposit entry of `deposit`, and
/// `entries` besides.
async fn load_payment_1(
    mongo: &Database,
    amount: &str,
    status: &str,
    deposit: &str,
    entries: Vec<RawDocumentBuf>,
) {
    insert(
        mongo,
        "payments",
        vec![payment_doc(1, amount, "USD", status, 1)],
    )
    .await;
    let mut all = vec![entry_doc(1, Some(oid(1)), "deposit", deposit, 2)];
    all.extend(entries);
    insert(mongo, "fundsledgerentries", all).await;
}

/// A live run translates a batch while the one before it commits: a webhook retried in
/// the very next batch must still be found (from memory: it is not in PostgreSQL yet)
/// and named both ways, exactly as a dry run (one batch after the other) names it.
#[tokio::test]
async fn a_retried_webhook_in_the_next_batch_is_named_both_ways() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("nextbatch").await;
    let copies: Vec<RawDocumentBuf> = (2..5)
        .map(|n| {
            let mut e = entry_doc(n, Some(oid(1)), "deposit", "10", n);
            e.append("reference", "tx_again");
            e
        })
        .collect();
    load_funded_payment(&mongo, copies).await;
    let dir = std::env::temp_dir();
    let dry_path = dir.join(format!("import-dry-{}.json", Uuid::new_v4()));
    let live_path = dir.join(format!("import-live-{}.json", Uuid::new_v4()));
    let batch = ["--batch-size", "1", "--report"];
    let dry_arg = dry_path.to_string_lossy().into_owned();
    let live_arg = live_path.to_string_lossy().into_owned();
    ok(&import(
        &db,
        &name,
        &[
            "payments",
            "--dry-run",
            batch[0],
            batch[1],
            batch[2],
            &dry_arg,
        ],
    ));
    ok(&import(
        &db,
        &name,
        &["payments", batch[0], batch[1], batch[2], &live_arg],
    ));
    let (dry, live) = (report_of(&dry_path), report_of(&live_path));
    let mut named = ids_of(&live, "anomalies", "duplicate_webhook");
    named.sort();
    let copies: Vec<String> = (2..5).map(|n| oid(50_000 + n).to_hex()).collect();
    assert_eq!(named, copies);
    // Each copy names the other two.
    for entry in live["anomalies"]["duplicate_webhook"]
        .as_array()
        .expect("listed")
    {
        let own = entry["object_id"].as_str().unwrap_or_default();
        let detail = entry["detail"].as_str().unwrap_or_default();
        for other in copies.iter().filter(|c| c.as_str() != own) {
            assert!(detail.contains(other.as_str()), "{own}: {detail}");
        }
    }
    assert_eq!(live["anomalies"], dry["anomalies"]);
    let _ = std::fs::remove_file(dry_path);
    let _ = std::fs::remove_file(live_path);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

fn refused_with(out: &std::process::Output, words: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "not refused: {stderr}");
    assert!(stderr.contains(words), "{stderr}");
}

/// The operator's mistakes a run must refuse before it writes anything: a misspelt legacy
/// database (MongoDB reads it as empty: an import of nothing would mark the domain
/// finished), `--retry-rejects` before any import, a second import while one runs.
#[tokio::test]
async fn an_empty_legacy_database_a_premature_retry_and_a_second_import_are_refused() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("mistakes").await;
    load_funded_payment(&mongo, Vec::new()).await;

    refused_with(
        &import(&db, &format!("{name}_typo"), &["payments"]),
        "has no collection payments, fundsledgerentries, disputes",
    );
    refused_with(
        &import(&db, &name, &["payments", "--retry-rejects"]),
        "import payments has not finished here",
    );
    // Neither marked the domain: disputes are still refused, nothing was written.
    refused_with(
        &import(&db, &name, &["disputes"]),
        "payments domain has not finished",
    );
    assert_eq!(event_count(&db).await, 0);

    // Another run holds the import lock.
    let mut holder = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("connect");
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('escrow-ledger import', 0))")
        .execute(&mut holder)
        .await
        .expect("lock");
    refused_with(
        &import(&db, &name, &["payments"]),
        "another import is running on this database",
    );
    assert_eq!(event_count(&db).await, 0);
    sqlx::Connection::close(holder).await.expect("close");
    ok(&import(&db, &name, &["payments"]));
    assert!(event_count(&db).await > 0);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// A payment written to MongoDB while the entries pass ran, its entry read before it: the
/// entry went to suspense; the run again the warning asks for must not import the payment
/// with nothing held while its escrow account holds the entry's money.
#[tokio::test]
async fn a_payment_read_after_its_entries_went_to_suspense_is_rejected() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("late").await;
    load_funded_payment(&mongo, vec![entry_doc(2, Some(oid(2)), "deposit", "10", 3)]).await;
    ok(&import(&db, &name, &["payments"]));
    let escrow = format!("escrow:{}", payment_uuid(oid(2)));
    let held: bool =
        sqlx::query_scalar("SELECT coalesce(sum(amount), 0) = 10 FROM postings WHERE account = $1")
            .bind(&escrow)
            .fetch_one(&db.admin)
            .await
            .expect("postings");
    assert!(held, "the orphan's 10 are not in {escrow}");
    // The late payment, with an _id after the last one read.
    insert(
        &mongo,
        "payments",
        vec![payment_doc(2, "10", "USD", "funded", 2)],
    )
    .await;
    ok(&import(&db, &name, &["payments"]));
    let code: Option<String> = sqlx::query_scalar(
        "SELECT code FROM legacy_import.rejects WHERE collection = 'payments' AND object_id = $1",
    )
    .bind(oid(2).to_hex())
    .fetch_optional(&db.admin)
    .await
    .expect("rejects");
    assert_eq!(code.as_deref(), Some("entries_in_suspense"));
    let streams: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = $1")
        .bind(payment_uuid(oid(2)))
        .fetch_one(&db.admin)
        .await
        .expect("events");
    assert_eq!(streams, 0);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// Stopped by SIGTERM (or Ctrl-C), a run says that what it committed stands and how to go
/// on, and exits 143 (130 for Ctrl-C); the same command then finishes the import.
#[tokio::test]
async fn a_run_stopped_by_a_signal_says_how_to_resume() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("sigterm").await;
    load_many(&mongo, 2000).await;
    let uri = mongo_uri();
    let child = std::process::Command::new(e2e::binary())
        .args([
            "import",
            "payments",
            "--batch-size",
            "10",
            "--mongo-uri",
            &uri,
        ])
        .args(["--mongo-db", &name])
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import");
    wait_for_checkpoint(&db, "payments", 50, Duration::from_mins(2)).await;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("stopped by a signal") && stderr.contains("run the same command again"),
        "{stderr}"
    );
    ok(&import(&db, &name, &["payments"]));
    let finished: bool = sqlx::query_scalar(
        "SELECT completed_at IS NOT NULL FROM legacy_import.domains WHERE domain = 'payments'",
    )
    .fetch_one(&db.admin)
    .await
    .expect("domain");
    assert!(finished);
    let imported: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM legacy_import.id_map WHERE collection = 'payments'",
    )
    .fetch_one(&db.admin)
    .await
    .expect("id map");
    assert_eq!(imported, 2000);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// A payment whose deposit was rejected disagrees with its legacy status; once the entry
/// is fixed and retried, its history agrees, and the listing goes: a stale one would
/// still explain a difference in verify.
#[tokio::test]
async fn a_retry_that_puts_a_history_right_clears_its_status_disagreement() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("stale").await;
    load_payment_1(&mongo, "10", "funded", "10.001", Vec::new()).await;
    ok(&import(&db, &name, &["payments"]));
    let listed = |kind: &'static str| {
        let pool = db.admin.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM legacy_import.anomalies WHERE object_id = $1 AND kind = $2",
            )
            .bind(oid(1).to_hex())
            .bind(kind)
            .fetch_one(&pool)
            .await
            .expect("anomalies")
        }
    };
    assert_eq!(listed("status_disagreement").await, 1);
    mongo
        .collection::<RawDocumentBuf>("fundsledgerentries")
        .update_one(
            doc! { "_id": oid(50_001) },
            doc! { "$set": { "amount": "10" } },
        )
        .await
        .expect("fix");
    ok(&import(&db, &name, &["payments", "--retry-rejects"]));
    assert_eq!(listed("status_disagreement").await, 0);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// Dispute 70001, still open, on payment 1.
async fn open_dispute_on_payment_1(mongo: &Database) {
    let dispute = rawdoc! {
        "_id": oid(70_001), "paymentId": oid(1), "purchaseRequestId": oid(1001),
        "openedBy": oid(9002), "openedByRole": "buyer", "reason": "other",
        "description": "never arrived", "status": "open",
        "timeline": [ { "status": "open", "at": at(21, 0), "by": "system" } ],
        "createdAt": at(21, 0), "updatedAt": at(21, 5),
    };
    insert(mongo, "disputes", vec![dispute]).await;
}

/// An entry fixed and retried after the disputes were imported, on a payment an open
/// imported dispute froze, stays rejected (`payment_moved_on`): appended after the freeze,
/// its fee would take money out of a frozen escrow. The payment's stream is unchanged.
#[tokio::test]
async fn a_retried_entry_of_a_payment_frozen_since_stays_rejected() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("frozen").await;
    load_funded_payment(&mongo, vec![entry_doc(2, Some(oid(1)), "fee", "0.001", 5)]).await;
    open_dispute_on_payment_1(&mongo).await;
    ok(&import(&db, &name, &["payments"]));
    ok(&import(&db, &name, &["disputes"]));
    let stream = payment_uuid(oid(1));
    let history = || {
        let pool = db.admin.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version",
            )
            .bind(stream)
            .fetch_all(&pool)
            .await
            .expect("history")
        }
    };
    let before = history().await;
    assert_eq!(
        before.last().map(String::as_str),
        Some("EscrowFrozen"),
        "{before:?}"
    );

    mongo
        .collection::<RawDocumentBuf>("fundsledgerentries")
        .update_one(
            doc! { "_id": oid(50_002) },
            doc! { "$set": { "amount": "1.00" } },
        )
        .await
        .expect("fix");
    ok(&import(&db, &name, &["payments", "--retry-rejects"]));
    assert_eq!(
        history().await,
        before,
        "a legacy fee landed after the freeze"
    );
    let code: String = sqlx::query_scalar(
        "SELECT code FROM legacy_import.rejects WHERE object_id = $1 AND resolved_at IS NULL",
    )
    .bind(oid(50_002).to_hex())
    .fetch_one(&db.admin)
    .await
    .expect("still rejected");
    assert_eq!(code, "payment_moved_on");
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// A payment whose `purchaseRequestId` is absent or null names no purchase request
/// (`legacy-mongo.md`: a Mixed reference that is null or absent is no reference) and
/// imports; its money, projection, rebuild and parity check go through like any other's.
#[tokio::test]
async fn a_payment_without_a_purchase_request_imports_with_none() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("noreq").await;
    let absent = without(
        &payment_doc(1, "100", "USD", "funded", 1),
        "purchaseRequestId",
    );
    let null = replace(
        &payment_doc(2, "50", "USD", "funded", 1),
        "purchaseRequestId",
        &RawBson::Null,
    );
    insert(&mongo, "payments", vec![absent, null]).await;
    insert(
        &mongo,
        "fundsledgerentries",
        vec![
            entry_doc(1, Some(oid(1)), "deposit", "100", 2),
            entry_doc(2, Some(oid(2)), "deposit", "50", 3),
        ],
    )
    .await;
    ok(&import(&db, &name, &["payments"]));
    let rejected: i64 = sqlx::query_scalar("SELECT count(*) FROM legacy_import.rejects")
        .fetch_one(&db.admin)
        .await
        .expect("rejects");
    assert_eq!(rejected, 0);
    ok(&e2e::run_binary(
        &["project"],
        &[("DATABASE_URL", db.url.as_str())],
    ));
    let rebuilt = ok(&e2e::run_binary(
        &["rebuild", "--all"],
        &[("DATABASE_URL", db.url.as_str())],
    ));
    assert!(!rebuilt.contains("FAILED"), "{rebuilt}");
    let rows: Vec<(Option<String>, Decimal)> =
        sqlx::query_as("SELECT purchase_request, held FROM finance.payments ORDER BY amount DESC")
            .fetch_all(&db.admin)
            .await
            .expect("payments");
    assert_eq!(rows, vec![(None, dec("100")), (None, dec("50"))]);
    ok(&import(&db, &name, &["verify", "payments"]));
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}

/// A legacy payment cancelled while it still held money, with a dispute open over it: the
/// import freezes its escrow like any open dispute's (before, it listed
/// `open_dispute_not_frozen` and left the money movable by an adjustment).
#[tokio::test]
async fn an_open_dispute_freezes_a_cancelled_payment_still_holding_money() {
    let db = TestDb::new().await;
    let (mongo, name) = legacy_db("cxfrozen").await;
    load_payment_1(&mongo, "100", "cancelled", "100", Vec::new()).await;
    open_dispute_on_payment_1(&mongo).await;
    ok(&import(&db, &name, &["payments"]));
    ok(&import(&db, &name, &["disputes"]));
    let last: String = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(payment_uuid(oid(1)))
    .fetch_one(&db.admin)
    .await
    .expect("history");
    assert_eq!(last, "EscrowFrozen");
    let not_frozen: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM legacy_import.anomalies WHERE kind = 'open_dispute_not_frozen'",
    )
    .fetch_one(&db.admin)
    .await
    .expect("anomalies");
    assert_eq!(not_frozen, 0);
    mongo.drop().await.expect("drop");
    db.drop_db().await;
}
