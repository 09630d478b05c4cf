//! Bad input and faults over real HTTP against `escrow-ledger serve`: every refusal answers
//! with the contract's status and `code` as `application/problem+json`, and writes nothing
//! (the event store, its postings, the idempotency keys and deposit references are
//! unchanged). Then idempotency: a replay is byte for byte, a refusal is not remembered.

#![allow(clippy::too_many_lines)] // the table of cases reads best as one table

use e2e::server::Server;
use e2e::TestDb;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// A response as it came: status, headers and the exact body text.
struct Raw {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

async fn raw(
    server: &Server,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
    headers: &[(String, String)],
) -> Raw {
    let mut req = server
        .http
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.expect("send request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Raw {
        status,
        headers,
        text,
    }
}

/// POSTs `body` with a fresh idempotency key (or `key`) and expects `status`.
async fn ok(server: &Server, path: &str, token: &str, body: &Value, key: Option<&str>) -> Value {
    let key = key.map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let r = raw(
        server,
        path,
        Some(token),
        body.to_string().into_bytes(),
        &[("idempotency-key".into(), key)],
    )
    .await;
    assert!(
        r.status == 200 || r.status == 201,
        "{path} {body}: {} {}",
        r.status,
        r.text
    );
    r.json()
}

/// Everything a command may write.
async fn store_counts(pool: &PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM postings), \
                (SELECT count(*) FROM idempotency_keys), (SELECT count(*) FROM deposit_references)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn entity(id: Uuid) -> Value {
    json!({"kind": "entity", "id": id})
}

/// A payment of `amount` USD through `stripe` between two new parties: (id, seller, buyer).
async fn payment(server: &Server, amount: &str) -> (Uuid, Uuid, Uuid) {
    let seller = Uuid::new_v4();
    let buyer = Uuid::new_v4();
    let created = ok(
        server,
        "/v1/payments",
        &server.tokens.coordinator,
        &json!({"buyer": entity(buyer), "seller": entity(seller),
                "purchase_request": {"kind": "external", "ref": "pr_1"},
                "amount": amount, "asset": "USD", "provider": "stripe"}),
        None,
    )
    .await;
    let id = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    (id, seller, buyer)
}

async fn deposit(server: &Server, payment: Uuid, amount: &str, reference: &str) {
    ok(
        server,
        &format!("/v1/payments/{payment}/deposits"),
        &server.tokens.coordinator,
        &json!({"amount": amount, "reference": reference}),
        None,
    )
    .await;
}

async fn open_dispute(server: &Server, payment: Uuid, buyer: Uuid) -> Uuid {
    let opened = ok(
        server,
        "/v1/disputes",
        &server.tokens.coordinator,
        &json!({"payment_id": payment, "opened_by": entity(buyer), "role": "buyer",
                "reason": "not_as_described", "description": "wrong colour"}),
        None,
    )
    .await;
    Uuid::parse_str(opened["id"].as_str().unwrap()).unwrap()
}

/// One bad request and what the contract says it gets.
struct Case {
    name: &'static str,
    path: String,
    token: Option<String>,
    body: Vec<u8>,
    /// Extra headers; a fresh `Idempotency-Key` is added unless `no_key`.
    headers: Vec<(String, String)>,
    no_key: bool,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    path: impl Into<String>,
    token: &str,
    body: impl Into<String>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        path: path.into(),
        token: Some(token.to_owned()),
        body: body.into().into_bytes(),
        headers: Vec::new(),
        no_key: false,
        status,
        code,
    }
}

impl Case {
    fn without_key(mut self) -> Self {
        self.no_key = true;
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_owned);
        self
    }

    fn body_bytes(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
}

#[tokio::test]
async fn every_bad_request_is_refused_with_its_problem_and_writes_nothing() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &["--no-projectors"]);
    let coord = server.tokens.coordinator.clone();
    let admin = server.tokens.admin.clone();
    let finance = server.tokens.finance.clone();

    // Fixtures, one per state the cases need.
    let (fresh, _, fresh_buyer) = payment(&server, "100.00").await;
    let (partial, _, _) = payment(&server, "100.00").await;
    deposit(&server, partial, "10.00", "ref_partial").await;
    let (funded, _, _) = payment(&server, "100.00").await;
    deposit(&server, funded, "100.00", "ref_funded").await;
    let (disputed, _, disputed_buyer) = payment(&server, "100.00").await;
    deposit(&server, disputed, "100.00", "ref_disputed").await;
    let dispute = open_dispute(&server, disputed, disputed_buyer).await;
    let (released, released_seller, _) = payment(&server, "100.00").await;
    deposit(&server, released, "100.00", "ref_released").await;
    ok(
        &server,
        &format!("/v1/payments/{released}/releases"),
        &coord,
        &json!({}),
        None,
    )
    .await;
    let used_key = Uuid::new_v4().to_string();
    ok(
        &server,
        &format!("/v1/payments/{partial}/deposits"),
        &coord,
        &json!({"amount": "5.00", "reference": "ref_keyed"}),
        Some(&used_key),
    )
    .await;
    // `partial`: version 3 now (created, two deposits).

    let create = |amount: &str, asset: &str| {
        json!({"buyer": entity(Uuid::new_v4()), "seller": entity(Uuid::new_v4()),
               "purchase_request": entity(Uuid::new_v4()),
               "amount": amount, "asset": asset, "provider": "stripe"})
        .to_string()
    };
    let create_raw_amount = |amount: &str| {
        format!(
            r#"{{"buyer":{{"kind":"entity","id":"{}"}},"seller":{{"kind":"entity","id":"{}"}},"purchase_request":{{"kind":"external","ref":"x"}},"amount":{amount},"asset":"USD","provider":"stripe"}}"#,
            Uuid::new_v4(),
            Uuid::new_v4()
        )
    };
    let deposit_path = |p: Uuid| format!("/v1/payments/{p}/deposits");
    let release_path = |p: Uuid| format!("/v1/payments/{p}/releases");
    let dep = |amount: &str, reference: &str| {
        json!({"amount": amount, "reference": reference}).to_string()
    };
    let thirty_digits = "123456789012345678901234567890";
    let mut too_big = b"{\"amount\":\"1.00\",\"reference\":\"".to_vec();
    too_big.resize(2 * 1024 * 1024 + 16, b'x');
    too_big.extend_from_slice(b"\"}");

    let cases = vec![
        // Malformed, wrong types, unknown and missing fields.
        case("malformed JSON", deposit_path(partial), &coord, r#"{"amount": "1.00", "reference": "#, 400, "validation_failed"),
        case("not JSON at all", "/v1/payments", &coord, "amount=1", 400, "validation_failed"),
        case("empty body", deposit_path(partial), &coord, "", 400, "validation_failed"),
        case("wrong type: allow_excess a string", deposit_path(partial), &coord,
             r#"{"amount": "1.00", "reference": "r_t1", "allow_excess": "yes"}"#, 400, "validation_failed"),
        case("wrong type: reference a number", deposit_path(partial), &coord,
             r#"{"amount": "1.00", "reference": 17}"#, 400, "validation_failed"),
        case("wrong type: buyer a string", "/v1/payments", &coord,
             json!({"buyer": "alice", "seller": entity(Uuid::new_v4()), "purchase_request": entity(Uuid::new_v4()),
                    "amount": "1.00", "asset": "USD", "provider": "stripe"}).to_string(), 400, "validation_failed"),
        case("wrong type: body an array", deposit_path(partial), &coord, "[1, 2]", 400, "validation_failed"),
        case("unknown field", deposit_path(partial), &coord,
             r#"{"amount": "1.00", "reference": "r_u1", "currency": "USD"}"#, 400, "validation_failed"),
        case("unknown field in a fee", release_path(funded), &coord,
             r#"{"fees": [{"kind": "fee", "amount": "1.00", "to": "me"}]}"#, 400, "validation_failed"),
        case("unknown fee kind", release_path(funded), &coord,
             r#"{"fees": [{"kind": "tip", "amount": "1.00"}]}"#, 400, "validation_failed"),
        case("missing field: reference", deposit_path(partial), &coord, r#"{"amount": "1.00"}"#, 400, "validation_failed"),
        case("missing field: seller", "/v1/payments", &coord,
             json!({"buyer": entity(Uuid::new_v4()), "purchase_request": entity(Uuid::new_v4()),
                    "amount": "1.00", "asset": "USD", "provider": "stripe"}).to_string(), 400, "validation_failed"),
        case("missing field: payout party", format!("/v1/payments/{released}/payouts"), &coord,
             r#"{"amount": "1.00", "reference": "po_m"}"#, 400, "validation_failed"),
        case("a deposit in the future", deposit_path(partial), &coord,
             json!({"amount": "1.00", "reference": "r_f1",
                    "occurred_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()}).to_string(),
             400, "validation_failed"),
        case("a deposit older than 72 h", deposit_path(partial), &coord,
             json!({"amount": "1.00", "reference": "r_f2",
                    "occurred_at": (chrono::Utc::now() - chrono::Duration::hours(73)).to_rfc3339()}).to_string(),
             400, "validation_failed"),
        case("occurred_at not a time", deposit_path(partial), &coord,
             r#"{"amount": "1.00", "reference": "r_f3", "occurred_at": "yesterday"}"#, 400, "validation_failed"),
        case("an Idempotency-Key of 256 characters", deposit_path(partial), &coord, dep("1.00", "r_k3"),
             400, "validation_failed")
            .without_key()
            .header("idempotency-key", &"k".repeat(256)),
        case("empty reference", deposit_path(partial), &coord, dep("1.00", ""), 400, "validation_failed"),
        // Ids.
        case("invalid UUID in the path", "/v1/payments/not-a-uuid/deposits", &coord, dep("1.00", "r_id1"),
             400, "validation_failed"),
        case("invalid UUID in the dispute path", "/v1/disputes/1234/evidence", &coord,
             json!({"submitted_by": entity(fresh_buyer), "type": "text", "description": "x"}).to_string(),
             400, "validation_failed"),
        case("invalid UUID in the body: payment_id", "/v1/disputes", &coord,
             json!({"payment_id": "p-1", "opened_by": entity(fresh_buyer), "role": "buyer",
                    "reason": "not_as_described", "description": "x"}).to_string(), 400, "validation_failed"),
        case("invalid UUID in the body: a party", "/v1/payments", &coord,
             json!({"buyer": {"kind": "entity", "id": "bob"}, "seller": entity(Uuid::new_v4()),
                    "purchase_request": entity(Uuid::new_v4()), "amount": "1.00", "asset": "USD",
                    "provider": "stripe"}).to_string(), 400, "validation_failed"),
        // PostgreSQL's text cannot hold U+0000: refused as input, not failed as a 500.
        case("a NUL in a text", "/v1/payments", &coord,
             r#"{"buyer": {"kind": "external", "ref": "nul\u0000x"}, "seller": {"kind": "external", "ref": "s"},
                 "purchase_request": {"kind": "external", "ref": "p"}, "amount": "1.00", "asset": "USD",
                 "provider": "stripe"}"#, 400, "validation_failed"),
        // `seller:ext:` would name no account: a projector could not read it back.
        case("empty external reference: seller", "/v1/payments", &coord,
             json!({"buyer": entity(Uuid::new_v4()), "seller": {"kind": "external", "ref": ""},
                    "purchase_request": entity(Uuid::new_v4()), "amount": "1.00", "asset": "USD",
                    "provider": "stripe"}).to_string(), 400, "validation_failed"),
        case("empty external reference: dispute opener", "/v1/disputes", &coord,
             json!({"payment_id": partial, "opened_by": {"kind": "external", "ref": ""}, "role": "buyer",
                    "reason": "not_as_described", "description": "x"}).to_string(), 400, "validation_failed"),
        case("invalid UUID in the body: adjustment payment_id", "/v1/adjustments", &admin,
             json!({"from": "platform:suspense", "to": "platform:adjustments", "amount": "1.00", "asset": "USD",
                    "reason": "x", "payment_id": "nope"}).to_string(), 400, "validation_failed"),
        // Amounts.
        case("amount 1e3", "/v1/payments", &coord, create("1e3", "USD"), 400, "validation_failed"),
        case("amount -5", "/v1/payments", &coord, create("-5", "USD"), 400, "validation_failed"),
        case("amount 0", "/v1/payments", &coord, create("0", "USD"), 400, "validation_failed"),
        case("amount 0.001 USD", "/v1/payments", &coord, create("0.001", "USD"), 400, "validation_failed"),
        case("amount NaN", "/v1/payments", &coord, create("NaN", "USD"), 400, "validation_failed"),
        case("amount of 30 digits", "/v1/payments", &coord, create(thirty_digits, "USD"), 400, "validation_failed"),
        case("amount a JSON number", "/v1/payments", &coord, create_raw_amount("125.5"), 400, "validation_failed"),
        case("amount with spaces", "/v1/payments", &coord, create(" 1.00", "USD"), 400, "validation_failed"),
        case("deposit 1e3", deposit_path(partial), &coord, dep("1e3", "r_a1"), 400, "validation_failed"),
        case("deposit -5", deposit_path(partial), &coord, dep("-5", "r_a2"), 400, "validation_failed"),
        case("deposit 0.001 USD", deposit_path(partial), &coord, dep("0.001", "r_a3"), 400, "validation_failed"),
        case("deposit NaN", deposit_path(partial), &coord, dep("NaN", "r_a4"), 400, "validation_failed"),
        case("deposit of 30 digits", deposit_path(partial), &coord, dep(thirty_digits, "r_a5"), 400, "validation_failed"),
        case("deposit a JSON number", deposit_path(partial), &coord, r#"{"amount": 1.5, "reference": "r_a6"}"#,
             400, "validation_failed"),
        case("release 0.001 USD", release_path(funded), &coord, r#"{"amount": "0.001"}"#, 400, "validation_failed"),
        case("fee -5", release_path(funded), &coord, r#"{"fees": [{"kind": "fee", "amount": "-5"}]}"#,
             400, "validation_failed"),
        case("adjustment 0.001 USD", "/v1/adjustments", &admin,
             json!({"from": "platform:suspense", "to": "platform:adjustments", "amount": "0.001", "asset": "USD",
                    "reason": "x"}).to_string(), 400, "validation_failed"),
        case("unknown asset", "/v1/payments", &coord, create("1.00", "XYZ"), 400, "validation_failed"),
        case("bad provider", "/v1/payments", &coord,
             json!({"buyer": entity(Uuid::new_v4()), "seller": entity(Uuid::new_v4()),
                    "purchase_request": entity(Uuid::new_v4()), "amount": "1.00", "asset": "USD",
                    "provider": "Stripe Inc"}).to_string(), 400, "validation_failed"),
        // Headers, size, tokens, roles.
        case("missing Idempotency-Key", deposit_path(partial), &coord, dep("1.00", "r_k1"), 400, "validation_failed")
            .without_key(),
        case("missing Idempotency-Key on a release", release_path(funded), &coord, "{}", 400, "validation_failed")
            .without_key(),
        case("malformed If-Match", deposit_path(partial), &coord, dep("1.00", "r_k2"), 400, "validation_failed")
            .header("if-match", "\"three\""),
        case("a body over 2 MiB", deposit_path(partial), &coord, "", 413, "payload_too_large").body_bytes(too_big),
        case("no token", deposit_path(partial), &coord, dep("1.00", "r_t2"), 401, "unauthorized").token(None),
        case("an unknown token", deposit_path(partial), &coord, dep("1.00", "r_t3"), 401, "unauthorized")
            .token(Some("el_not_a_token")),
        case("a Basic authorization", "/v1/payments", &coord, create("1.00", "USD"), 401, "unauthorized")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .token(None),
        case("finance may not deposit", deposit_path(partial), &finance, dep("1.00", "r_r1"), 403, "forbidden"),
        case("finance may not create", "/v1/payments", &finance, create("1.00", "USD"), 403, "forbidden"),
        case("a coordinator may not resolve", format!("/v1/disputes/{dispute}/resolution"), &coord,
             r#"{"outcome": "no_action"}"#, 403, "forbidden"),
        case("a coordinator may not adjust", "/v1/adjustments", &coord,
             json!({"from": "platform:suspense", "to": "platform:adjustments", "amount": "1.00", "asset": "USD",
                    "reason": "x"}).to_string(), 403, "forbidden"),
        case("an admin may not release", release_path(funded), &admin, "{}", 403, "forbidden"),
        // State.
        case("a release on a disputed payment", release_path(disputed), &coord, "{}", 422, "escrow_frozen"),
        case("a refund on a disputed payment", format!("/v1/payments/{disputed}/refunds"), &coord,
             r#"{"amount": "1.00"}"#, 422, "escrow_frozen"),
        case("an adjustment of a disputed payment", "/v1/adjustments", &admin,
             json!({"from": format!("escrow:{disputed}"), "to": "platform:adjustments", "amount": "1.00",
                    "asset": "USD", "reason": "x", "payment_id": disputed}).to_string(), 422, "escrow_frozen"),
        case("a refund after full release", format!("/v1/payments/{released}/refunds"), &coord, "{}",
             422, "insufficient_funds"),
        case("a refund of 1.00 after full release", format!("/v1/payments/{released}/refunds"), &coord,
             r#"{"amount": "1.00"}"#, 422, "insufficient_funds"),
        case("a second release", release_path(released), &coord, "{}", 422, "insufficient_funds"),
        case("a release larger than held", release_path(partial), &coord, r#"{"amount": "15.01"}"#,
             422, "insufficient_funds"),
        case("fees larger than the release", release_path(funded), &coord,
             r#"{"amount": "10.00", "fees": [{"kind": "fee", "amount": "10.01"}]}"#, 422, "insufficient_funds"),
        case("a deposit past the amount", deposit_path(funded), &coord, dep("0.01", "r_s1"), 422, "invalid_state"),
        case("a deposit past the amount, partly", deposit_path(partial), &coord, dep("85.01", "r_s2"),
             422, "invalid_state"),
        case("a repeated deposit reference", deposit_path(partial), &coord, dep("1.00", "ref_partial"),
             409, "duplicate_reference"),
        case("a reference deposited on another payment", deposit_path(fresh), &coord, dep("1.00", "ref_funded"),
             409, "duplicate_reference"),
        case("a cancellation with funds held", format!("/v1/payments/{funded}/cancellation"), &coord,
             r#"{"reason": "changed my mind"}"#, 422, "invalid_state"),
        case("a second open dispute", "/v1/disputes", &coord,
             json!({"payment_id": disputed, "opened_by": entity(disputed_buyer), "role": "buyer",
                    "reason": "not_as_described", "description": "again"}).to_string(), 422, "invalid_state"),
        case("resolved through /status", format!("/v1/disputes/{dispute}/status"), &admin,
             r#"{"status": "resolved"}"#, 422, "invalid_state"),
        case("a split above what is held", format!("/v1/disputes/{dispute}/resolution"), &admin,
             r#"{"outcome": "split", "seller_amount": "60.00", "buyer_amount": "40.01"}"#, 422, "insufficient_funds"),
        // The contract has no code of its own for a split short of what is held: it is right
        // for another state of the payment (what it holds), so 422 invalid_state.
        case("a split below what is held", format!("/v1/disputes/{dispute}/resolution"), &admin,
             r#"{"outcome": "split", "seller_amount": "60.00", "buyer_amount": "39.99"}"#, 422, "invalid_state"),
        case("a split without its amounts", format!("/v1/disputes/{dispute}/resolution"), &admin,
             r#"{"outcome": "split", "seller_amount": "100.00"}"#, 400, "validation_failed"),
        case("a split with fees above the seller's part", format!("/v1/disputes/{dispute}/resolution"), &admin,
             r#"{"outcome": "split", "seller_amount": "1.00", "buyer_amount": "99.00", "fees": [{"kind": "fee", "amount": "1.01"}]}"#,
             422, "insufficient_funds"),
        case("a payout beyond the seller's share", format!("/v1/payments/{released}/payouts"), &coord,
             r#"{"party": "seller", "amount": "100.01", "reference": "po_1"}"#, 422, "insufficient_funds"),
        case("a payout to a buyer with no share", format!("/v1/payments/{released}/payouts"), &coord,
             r#"{"party": "buyer", "amount": "0.01", "reference": "po_2"}"#, 422, "insufficient_funds"),
        case("a payout before any release", format!("/v1/payments/{funded}/payouts"), &coord,
             r#"{"party": "seller", "amount": "1.00", "reference": "po_3"}"#, 422, "insufficient_funds"),
        case("an adjustment taking the seller's share below zero", "/v1/adjustments", &admin,
             json!({"from": format!("seller:{released_seller}"), "to": "platform:adjustments", "amount": "100.01",
                    "asset": "USD", "reason": "claw back", "payment_id": released}).to_string(),
             422, "insufficient_funds"),
        case("an adjustment taking the escrow below zero", "/v1/adjustments", &admin,
             json!({"from": format!("escrow:{fresh}"), "to": "platform:suspense", "amount": "0.01",
                    "asset": "USD", "reason": "x", "payment_id": fresh}).to_string(),
             422, "insufficient_funds"),
        case("an adjustment without a platform side", "/v1/adjustments", &admin,
             json!({"from": format!("escrow:{funded}"), "to": "platform:fees", "amount": "1.00",
                    "asset": "USD", "reason": "x", "payment_id": funded}).to_string(), 400, "validation_failed"),
        // Keys, versions, ids.
        case("the same key with another body", deposit_path(partial), &coord, dep("5.01", "ref_keyed"),
             422, "idempotency_key_reused")
            .without_key()
            .header("idempotency-key", &used_key),
        case("the same key on another payment", deposit_path(fresh), &coord, dep("5.00", "ref_keyed"),
             422, "idempotency_key_reused")
            .without_key()
            .header("idempotency-key", &used_key),
        case("If-Match with a stale version", deposit_path(partial), &coord, dep("1.00", "r_v1"), 412, "version_conflict")
            .header("if-match", "\"1\""),
        case("If-Match with a future version", deposit_path(partial), &coord, dep("1.00", "r_v2"), 412, "version_conflict")
            .header("if-match", "\"9\""),
        case("an unknown payment: deposit", deposit_path(Uuid::new_v4()), &coord, dep("1.00", "r_n1"), 404, "not_found"),
        case("an unknown payment: release", release_path(Uuid::new_v4()), &coord, "{}", 404, "not_found"),
        case("an unknown payment: payout", format!("/v1/payments/{}/payouts", Uuid::new_v4()), &coord,
             r#"{"party": "seller", "amount": "1.00", "reference": "po_n"}"#, 404, "not_found"),
        case("an unknown payment: cancellation", format!("/v1/payments/{}/cancellation", Uuid::new_v4()), &coord,
             r#"{"reason": "x"}"#, 404, "not_found"),
        case("an unknown payment: dispute", "/v1/disputes", &coord,
             json!({"payment_id": Uuid::new_v4(), "opened_by": entity(fresh_buyer), "role": "buyer",
                    "reason": "not_as_described", "description": "x"}).to_string(), 404, "not_found"),
        case("an unknown dispute", format!("/v1/disputes/{}/evidence", Uuid::new_v4()), &coord,
             json!({"submitted_by": entity(fresh_buyer), "type": "text", "description": "x"}).to_string(),
             404, "not_found"),
        case("an unknown route", "/v1/payment", &coord, create("1.00", "USD"), 404, "not_found"),
    ];

    let mut failures = Vec::new();
    for c in cases {
        let before = store_counts(&db.admin).await;
        let mut headers = c.headers.clone();
        if !c.no_key {
            headers.push(("idempotency-key".into(), Uuid::new_v4().to_string()));
        }
        let r = raw(&server, &c.path, c.token.as_deref(), c.body, &headers).await;
        let after = store_counts(&db.admin).await;
        let body = r.json();
        let content_type = r
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut wrong = Vec::new();
        if r.status != c.status {
            wrong.push(format!("status {} (want {})", r.status, c.status));
        }
        if body["code"] != c.code {
            wrong.push(format!("code {} (want {})", body["code"], c.code));
        }
        if body["status"] != c.status {
            wrong.push(format!("problem status {}", body["status"]));
        }
        if !body["type"].is_string() || !body["title"].is_string() || !body["detail"].is_string() {
            wrong.push("type, title and detail must be strings".to_owned());
        }
        if content_type != "application/problem+json" {
            wrong.push(format!("content-type {content_type:?}"));
        }
        if before != after {
            wrong.push(format!("the store changed: {before:?} -> {after:?}"));
        }
        if !wrong.is_empty() {
            let text: String = r.text.chars().take(300).collect();
            failures.push(format!("{}: {} — {text}", c.name, wrong.join(", ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    drop(server);
    db.drop_db().await;
}

#[tokio::test]
async fn a_replay_is_byte_for_byte_and_a_refusal_is_not_remembered() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &["--no-projectors"]);
    let coord = server.tokens.coordinator.clone();

    // A creation with a key and no payment_id: the replay names the same (generated) id.
    let create = json!({"buyer": entity(Uuid::new_v4()), "seller": entity(Uuid::new_v4()),
                        "purchase_request": entity(Uuid::new_v4()),
                        "amount": "100.00", "asset": "USD", "provider": "stripe"});
    let key = [("idempotency-key".to_owned(), Uuid::new_v4().to_string())];
    let first = raw(
        &server,
        "/v1/payments",
        Some(&coord),
        create.to_string().into_bytes(),
        &key,
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let counts = store_counts(&db.admin).await;
    // The same body, re-serialized with other whitespace and key order, is the same request.
    let pretty = serde_json::to_string_pretty(&create).unwrap();
    let again = raw(
        &server,
        "/v1/payments",
        Some(&coord),
        pretty.into_bytes(),
        &key,
    )
    .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.text, first.text, "a replay must be byte for byte");
    assert_eq!(
        again.headers.get("content-type"),
        first.headers.get("content-type")
    );
    assert_eq!(store_counts(&db.admin).await, counts, "no second effect");
    let payment_id = first.json()["id"].as_str().unwrap().to_owned();

    // A deposit, replayed after the stream moved on: still the first answer.
    let dep_key = [("idempotency-key".to_owned(), Uuid::new_v4().to_string())];
    let dep_path = format!("/v1/payments/{payment_id}/deposits");
    let dep_body = br#"{"amount": "100.00", "reference": "ch_1"}"#.to_vec();
    let first = raw(&server, &dep_path, Some(&coord), dep_body.clone(), &dep_key).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let counts = store_counts(&db.admin).await;
    let again = raw(&server, &dep_path, Some(&coord), dep_body.clone(), &dep_key).await;
    assert_eq!(
        (again.status, again.text.as_str()),
        (200, first.text.as_str())
    );
    assert_eq!(store_counts(&db.admin).await, counts, "no second deposit");
    let deposits: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'FundsDeposited'",
    )
    .bind(Uuid::parse_str(&payment_id).unwrap())
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(deposits, 1);
    // The key belongs to its client: another client may use the same key for its own request.
    let other = raw(
        &server,
        "/v1/disputes",
        Some(&server.tokens.admin),
        json!({"payment_id": Uuid::new_v4(), "opened_by": entity(Uuid::new_v4()), "role": "buyer",
               "reason": "not_as_described", "description": "x"})
        .to_string()
        .into_bytes(),
        &dep_key,
    )
    .await;
    assert_eq!(other.status, 404, "{}", other.text);

    // A refused payout is not remembered: after the release, the same key succeeds.
    let po_key = [("idempotency-key".to_owned(), Uuid::new_v4().to_string())];
    let po_path = format!("/v1/payments/{payment_id}/payouts");
    let po_body = br#"{"party": "seller", "amount": "97.00", "reference": "po_1"}"#.to_vec();
    let refused = raw(&server, &po_path, Some(&coord), po_body.clone(), &po_key).await;
    assert_eq!(refused.status, 422);
    assert_eq!(refused.json()["code"], "insufficient_funds");
    let counts = store_counts(&db.admin).await;
    let refused_again = raw(&server, &po_path, Some(&coord), po_body.clone(), &po_key).await;
    assert_eq!(refused_again.status, 422, "decided afresh: still refused");
    assert_eq!(store_counts(&db.admin).await, counts);
    let released = raw(
        &server,
        &format!("/v1/payments/{payment_id}/releases"),
        Some(&coord),
        br#"{"fees": [{"kind": "fee", "amount": "3.00"}]}"#.to_vec(),
        &[("idempotency-key".to_owned(), Uuid::new_v4().to_string())],
    )
    .await;
    assert_eq!(released.status, 200, "{}", released.text);
    let paid = raw(&server, &po_path, Some(&coord), po_body.clone(), &po_key).await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    let paid_again = raw(&server, &po_path, Some(&coord), po_body.clone(), &po_key).await;
    assert_eq!(
        (paid_again.status, paid_again.text.as_str()),
        (200, paid.text.as_str())
    );
    let seller_payouts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'PayoutMade'",
    )
    .bind(Uuid::parse_str(&payment_id).unwrap())
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(seller_payouts, 1);

    // A release refused while a dispute freezes the escrow is not remembered either: once
    // the dispute ends, the same request under the same key is decided afresh and succeeds.
    let (p2, _, p2_buyer) = payment(&server, "10.00").await;
    deposit(&server, p2, "10.00", "ch_2").await;
    let dispute = open_dispute(&server, p2, p2_buyer).await;
    let rel_key = [("idempotency-key".to_owned(), Uuid::new_v4().to_string())];
    let rel_path = format!("/v1/payments/{p2}/releases");
    let frozen = raw(&server, &rel_path, Some(&coord), b"{}".to_vec(), &rel_key).await;
    assert_eq!(frozen.json()["code"], "escrow_frozen", "{}", frozen.text);
    let ended = raw(
        &server,
        &format!("/v1/disputes/{dispute}/status"),
        Some(&server.tokens.admin),
        br#"{"status": "withdrawn"}"#.to_vec(),
        &[],
    )
    .await;
    assert_eq!(ended.status, 200, "{}", ended.text);
    let accepted = raw(&server, &rel_path, Some(&coord), b"{}".to_vec(), &rel_key).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    let replayed = raw(&server, &rel_path, Some(&coord), b"{}".to_vec(), &rel_key).await;
    assert_eq!(replayed.text, accepted.text);

    e2e::assert_verifies(&db);
    drop(server);
    db.drop_db().await;
}
