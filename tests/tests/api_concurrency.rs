//! The invariants under concurrency, over real HTTP against `escrow-ledger serve`: a crowd
//! of releases moves the money once, a crowd of retries has one effect, and random
//! interleavings of deposits, releases, refunds, payouts and a dispute opening never break
//! the ledger's rules.

#![allow(clippy::too_many_lines)] // the scenarios read best whole

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::server::Server;
use e2e::TestDb;
use futures::future::join_all;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Status and exact body text.
async fn post(
    server: &Server,
    path: &str,
    token: &str,
    body: &str,
    key: Option<&str>,
) -> (u16, String) {
    let mut req = server
        .http
        .post(format!("{}{path}", server.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.expect("send request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn code(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn key() -> String {
    Uuid::new_v4().to_string()
}

/// A payment of `amount` USD between two new parties: (id, seller, buyer).
async fn payment(server: &Server, amount: &str) -> (Uuid, Uuid, Uuid) {
    let seller = Uuid::new_v4();
    let buyer = Uuid::new_v4();
    let body = json!({"buyer": {"kind": "entity", "id": buyer}, "seller": {"kind": "entity", "id": seller},
                      "purchase_request": {"kind": "external", "ref": "pr"},
                      "amount": amount, "asset": "USD", "provider": "stripe"});
    let (s, text) = post(
        server,
        "/v1/payments",
        &server.tokens.coordinator,
        &body.to_string(),
        None,
    )
    .await;
    assert_eq!(s, 201, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    (
        Uuid::parse_str(v["id"].as_str().unwrap()).unwrap(),
        seller,
        buyer,
    )
}

async fn balance(pool: &PgPool, account: &str) -> Decimal {
    sqlx::query_scalar("SELECT coalesce(sum(amount), 0) FROM postings WHERE account = $1")
        .bind(account)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn stream_events(pool: &PgPool, stream: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = $1")
        .bind(stream)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn fifty_full_releases_move_the_money_once() {
    let db = TestDb::new().await;
    let server = Arc::new(Server::start(&db, &["--no-projectors"]));
    let (id, seller, _) = payment(&server, "100.00").await;
    let (s, text) = post(
        &server,
        &format!("/v1/payments/{id}/deposits"),
        &server.tokens.coordinator,
        r#"{"amount": "100.00", "reference": "ch_1"}"#,
        Some(&key()),
    )
    .await;
    assert_eq!(s, 200, "{text}");

    let path = format!("/v1/payments/{id}/releases");
    let answers = join_all((0..50).map(|i| {
        let server = server.clone();
        let path = path.clone();
        tokio::spawn(async move {
            // Half name the amount, half take the default (all that is held).
            let body = if i % 2 == 0 {
                r#"{"amount": "100.00", "fees": [{"kind": "fee", "amount": "1.00"}]}"#
            } else {
                r#"{"fees": [{"kind": "fee", "amount": "1.00"}]}"#
            };
            post(
                &server,
                &path,
                &server.tokens.coordinator,
                body,
                Some(&key()),
            )
            .await
        })
    }))
    .await;
    let answers: Vec<(u16, String)> = answers.into_iter().map(Result::unwrap).collect();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "exactly one release succeeds: {answers:?}");
    for (s, text) in &answers {
        assert!(*s < 500, "never a 5xx: {s} {text}");
        if *s != 200 {
            assert_eq!(
                *s, 422,
                "the losers get the refusal of the fresh state: {text}"
            );
            let c = code(text);
            assert!(
                c == "insufficient_funds" || c == "invalid_state",
                "refused with {c}: {text}"
            );
        }
    }
    assert_eq!(
        balance(&db.admin, &format!("seller:{seller}")).await,
        Decimal::new(9900, 2),
        "the seller is credited once"
    );
    assert_eq!(
        balance(&db.admin, "platform:fees").await,
        Decimal::new(100, 2)
    );
    assert_eq!(
        balance(&db.admin, &format!("escrow:{id}")).await,
        Decimal::ZERO
    );
    assert_eq!(stream_events(&db.admin, id).await, 3);
    drop(server);
    db.drop_db().await;
}

#[tokio::test]
async fn fifty_retries_of_one_command_have_one_effect_and_one_answer() {
    let db = TestDb::new().await;
    let server = Arc::new(Server::start(&db, &["--no-projectors"]));
    let (id, seller, _) = payment(&server, "100.00").await;
    let (s, text) = post(
        &server,
        &format!("/v1/payments/{id}/deposits"),
        &server.tokens.coordinator,
        r#"{"amount": "100.00", "reference": "ch_1"}"#,
        Some(&key()),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let events_before = stream_events(&db.admin, id).await;

    // A partial release, so a second effect would succeed and show.
    let path = format!("/v1/payments/{id}/releases");
    let the_key = key();
    let answers = join_all((0..50).map(|_| {
        let server = server.clone();
        let path = path.clone();
        let the_key = the_key.clone();
        tokio::spawn(async move {
            post(
                &server,
                &path,
                &server.tokens.coordinator,
                r#"{"amount": "10.00"}"#,
                Some(&the_key),
            )
            .await
        })
    }))
    .await;
    let answers: Vec<(u16, String)> = answers.into_iter().map(Result::unwrap).collect();
    let first = answers[0].clone();
    assert_eq!(first.0, 200, "{}", first.1);
    for a in &answers {
        assert_eq!(
            a, &first,
            "every retry gets the first answer, byte for byte"
        );
    }
    assert_eq!(stream_events(&db.admin, id).await, events_before + 1);
    assert_eq!(
        balance(&db.admin, &format!("seller:{seller}")).await,
        Decimal::new(1000, 2)
    );

    // The same for a creation (201) and a dispute opening, which need no key by contract
    // but honour one.
    let create = json!({"buyer": {"kind": "entity", "id": Uuid::new_v4()},
                        "seller": {"kind": "entity", "id": Uuid::new_v4()},
                        "purchase_request": {"kind": "external", "ref": "pr"},
                        "amount": "5.00", "asset": "USD", "provider": "stripe"})
    .to_string();
    let create_key = key();
    let total_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    let answers = join_all((0..50).map(|_| {
        let server = server.clone();
        let create = create.clone();
        let create_key = create_key.clone();
        tokio::spawn(async move {
            post(
                &server,
                "/v1/payments",
                &server.tokens.coordinator,
                &create,
                Some(&create_key),
            )
            .await
        })
    }))
    .await;
    let answers: Vec<(u16, String)> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers[0].0, 201, "{}", answers[0].1);
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    let total_after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(total_after, total_before + 1, "one payment created");
    drop(server);
    db.drop_db().await;
}

#[tokio::test]
async fn racing_dispute_openings_and_references_admit_one() {
    let db = TestDb::new().await;
    let server = Arc::new(Server::start(&db, &["--no-projectors"]));
    let (id, _, buyer) = payment(&server, "100.00").await;
    let body =
        json!({"payment_id": id, "opened_by": {"kind": "entity", "id": buyer}, "role": "buyer",
                      "reason": "not_as_described", "description": "race"})
        .to_string();
    let answers = join_all((0..20).map(|_| {
        let server = server.clone();
        let body = body.clone();
        tokio::spawn(async move {
            post(
                &server,
                "/v1/disputes",
                &server.tokens.coordinator,
                &body,
                None,
            )
            .await
        })
    }))
    .await;
    let answers: Vec<(u16, String)> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "one open dispute per payment: {answers:?}"
    );
    for (s, text) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!((*s, code(text).as_str()), (422, "invalid_state"), "{text}");
    }
    let frozen: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'EscrowFrozen'",
    )
    .bind(id)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(frozen, 1);

    // One provider reference deposited on 20 payments at once: it lands once.
    let mut payments = Vec::new();
    for _ in 0..20 {
        payments.push(payment(&server, "10.00").await.0);
    }
    let answers = join_all(payments.iter().map(|p| {
        let server = server.clone();
        let path = format!("/v1/payments/{p}/deposits");
        tokio::spawn(async move {
            post(
                &server,
                &path,
                &server.tokens.coordinator,
                r#"{"amount": "10.00", "reference": "ch_shared"}"#,
                Some(&key()),
            )
            .await
        })
    }))
    .await;
    let answers: Vec<(u16, String)> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{answers:?}"
    );
    for (s, text) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(
            (*s, code(text).as_str()),
            (409, "duplicate_reference"),
            "{text}"
        );
    }
    let deposits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'FundsDeposited'")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!(deposits, 1);
    drop(server);
    db.drop_db().await;
}

/// A small deterministic generator (SplitMix64), seeded per test run and printed, so a
/// failing interleaving can be replayed with `CONCURRENCY_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An amount of whole cents in `1..=max_cents`.
    fn cents(&mut self, max_cents: u64) -> String {
        let c = self.below(max_cents) + 1;
        format!("{}.{:02}", c / 100, c % 100)
    }
}

/// One request of a run.
#[derive(Debug, Clone)]
struct Step {
    path: String,
    body: String,
    /// Delay before sending, to vary the interleaving.
    delay_us: u64,
    /// Is it a payment command (whose success adds one event to the payment's stream)?
    on_payment: bool,
}

/// The requests of one run on payment `id` (amount 100.00, 40.00 already deposited).
fn plan(rng: &mut Rng, id: Uuid, buyer: Uuid, run: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut push = |path: String, body: String, on_payment: bool| {
        steps.push(Step {
            path,
            body,
            delay_us: 0,
            on_payment,
        });
    };
    for i in 0..=rng.below(3) {
        // Up to 60.00 more would fit; some of these go past the amount.
        push(
            format!("/v1/payments/{id}/deposits"),
            json!({"amount": rng.cents(4000), "reference": format!("r{run}_{i}")}).to_string(),
            true,
        );
    }
    for _ in 0..=rng.below(3) {
        let body = match rng.below(3) {
            0 => json!({}),
            1 => json!({"amount": rng.cents(6000)}),
            _ => json!({"amount": rng.cents(6000), "fees": [{"kind": "fee", "amount": "0.50"}]}),
        };
        push(
            format!("/v1/payments/{id}/releases"),
            body.to_string(),
            true,
        );
    }
    if rng.below(2) == 0 {
        push(
            format!("/v1/payments/{id}/refunds"),
            json!({"amount": rng.cents(3000)}).to_string(),
            true,
        );
    }
    for i in 0..=rng.below(2) {
        let party = if rng.below(3) == 0 { "buyer" } else { "seller" };
        push(
            format!("/v1/payments/{id}/payouts"),
            json!({"party": party, "amount": rng.cents(5000), "reference": format!("po{run}_{i}")})
                .to_string(),
            true,
        );
    }
    if rng.below(4) != 0 {
        push(
            "/v1/disputes".to_owned(),
            json!({"payment_id": id, "opened_by": {"kind": "entity", "id": buyer}, "role": "buyer",
                   "reason": "not_as_described", "description": "race"})
            .to_string(),
            false,
        );
    }
    for step in &mut steps {
        // Payouts lean late, so some find a released share to pay.
        let late = if step.path.ends_with("payouts") {
            2000
        } else {
            0
        };
        step.delay_us = late + rng.below(4000);
    }
    steps
}

/// Checks the ledger's invariants for payment `id`; returns what is wrong.
async fn invariants(pool: &PgPool, id: Uuid, amount: Decimal) -> Vec<String> {
    let mut wrong = Vec::new();
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT p.position, p.asset FROM postings p \
         JOIN events e USING (position) WHERE e.stream_id = $1 \
         GROUP BY p.position, p.asset HAVING sum(p.amount) <> 0) x",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    if unbalanced != 0 {
        wrong.push(format!(
            "{unbalanced} event(s) whose postings do not sum to zero"
        ));
    }
    // The payment's shares, after every one of its events in stream order.
    let lowest: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT account, min(running) FROM ( \
           SELECT p.account, sum(p.amount) OVER (PARTITION BY p.account ORDER BY e.version, p.leg) AS running \
           FROM postings p JOIN events e USING (position) \
           WHERE e.stream_id = $1 AND split_part(p.account, ':', 1) IN ('escrow', 'seller', 'buyer') \
         ) r GROUP BY account",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap();
    for (account, min) in lowest {
        if min < Decimal::ZERO {
            wrong.push(format!("{account} went down to {min}"));
        }
    }
    let deposited: Decimal = sqlx::query_scalar(
        "SELECT coalesce(sum(p.amount), 0) FROM postings p JOIN events e USING (position) \
         WHERE e.stream_id = $1 AND e.event_type = 'FundsDeposited' AND p.account = 'escrow:' || $1::text",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    if deposited > amount {
        wrong.push(format!("deposited {deposited} > amount {amount}"));
    }
    let frozen_at: Option<i64> = sqlx::query_scalar(
        "SELECT min(version) FROM events WHERE stream_id = $1 AND event_type = 'EscrowFrozen'",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    if let Some(v) = frozen_at {
        let moved: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT e.event_type FROM postings p JOIN events e USING (position) \
             WHERE e.stream_id = $1 AND e.version > $2 AND p.account = 'escrow:' || $1::text \
               AND p.amount < 0 AND e.event_type <> 'DisputeSettled'",
        )
        .bind(id)
        .bind(v)
        .fetch_all(pool)
        .await
        .unwrap();
        if !moved.is_empty() {
            wrong.push(format!("money left a frozen escrow by {moved:?}"));
        }
    }
    wrong
}

/// One run on a payment of its own: its requests at once, then the invariants; returns
/// what went wrong and the outcome of every request (for the tally).
async fn one_run(
    server: Arc<Server>,
    pool: PgPool,
    seed: u64,
    run: usize,
) -> (Vec<String>, Vec<String>) {
    let mut rng = Rng(seed ^ (run as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let (id, _, buyer) = payment(&server, "100.00").await;
    let (s, text) = post(
        &server,
        &format!("/v1/payments/{id}/deposits"),
        &server.tokens.coordinator,
        &json!({"amount": "40.00", "reference": format!("r{run}_first")}).to_string(),
        Some(&key()),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let steps = plan(&mut rng, id, buyer, run);
    let answers = join_all(steps.iter().cloned().map(|step| {
        let server = server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(step.delay_us)).await;
            let answer = post(
                &server,
                &step.path,
                &server.tokens.coordinator,
                &step.body,
                Some(&key()),
            )
            .await;
            (step, answer)
        })
    }))
    .await;
    let mut wrong = Vec::new();
    let mut accepted_payment_events = 0;
    let mut dispute = None;
    let mut versions = Vec::new();
    let mut outcomes = Vec::new();
    for a in answers {
        let (step, (status, text)) = a.unwrap();
        let kind = step.path.rsplit('/').next().unwrap_or_default();
        outcomes.push(if status < 300 {
            format!("{kind}: ok")
        } else {
            format!("{kind}: {}", code(&text))
        });
        match status {
            200 | 201 => {
                let v: Value = serde_json::from_str(&text).unwrap();
                if step.on_payment {
                    accepted_payment_events += 1;
                    versions.push(v["stream_version"].as_i64().unwrap());
                } else {
                    // A dispute opening appends EscrowFrozen to the payment.
                    accepted_payment_events += 1;
                    dispute = v["id"].as_str().map(str::to_owned);
                }
            }
            422 => {
                let c = code(&text);
                if !["insufficient_funds", "invalid_state", "escrow_frozen"].contains(&c.as_str()) {
                    wrong.push(format!("{} {}: 422 {text}", step.path, step.body));
                }
            }
            _ => wrong.push(format!(
                "{} {}: unexpected {status} {text}",
                step.path, step.body
            )),
        }
    }
    versions.sort_unstable();
    let before = versions.len();
    versions.dedup();
    if versions.len() != before {
        wrong.push("two successes answered the same stream version".to_owned());
    }
    let events = stream_events(&pool, id).await;
    if events != 2 + accepted_payment_events {
        wrong.push(format!(
            "{events} events in the payment's stream, but {accepted_payment_events} commands accepted after the first two"
        ));
    }
    // The dispute's resolution is the one way money leaves the frozen escrow.
    if let Some(dispute) = dispute {
        let outcome = ["release_to_seller", "refund_to_buyer", "no_action"]
            [usize::try_from(rng.below(3)).unwrap()];
        let (status, text) = post(
            &server,
            &format!("/v1/disputes/{dispute}/resolution"),
            &server.tokens.admin,
            &json!({"outcome": outcome}).to_string(),
            Some(&key()),
        )
        .await;
        if status != 200 && !(status == 422 && code(&text) == "insufficient_funds") {
            wrong.push(format!("resolution {outcome}: {status} {text}"));
        }
    }
    wrong.extend(invariants(&pool, id, Decimal::new(10000, 2)).await);
    let wrong = wrong
        .into_iter()
        .map(|w| format!("run {run} (payment {id}): {w}"))
        .collect();
    (wrong, outcomes)
}

#[tokio::test]
async fn random_interleavings_keep_the_invariants() {
    const RUNS: usize = 200;
    const PARALLEL: usize = 8;
    let db = TestDb::new().await;
    let server = Arc::new(Server::start(&db, &["--no-projectors"]));
    let seed = std::env::var("CONCURRENCY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from_le_bytes(Uuid::new_v4().as_bytes()[..8].try_into().unwrap()));
    println!("CONCURRENCY_SEED={seed}");
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut tally = std::collections::BTreeMap::new();
    for batch in 0..RUNS.div_ceil(PARALLEL) {
        let runs = (batch * PARALLEL..((batch + 1) * PARALLEL).min(RUNS))
            .map(|run| tokio::spawn(one_run(server.clone(), db.admin.clone(), seed, run)));
        for r in join_all(runs).await {
            let (wrong, outcomes) = r.unwrap();
            failures.extend(wrong);
            for o in outcomes {
                *tally.entry(o).or_insert(0_usize) += 1;
            }
        }
    }
    println!(
        "{RUNS} runs in {:.1} s; outcomes:",
        start.elapsed().as_secs_f64()
    );
    for (outcome, n) in &tally {
        println!("  {outcome:<32} {n:>5}");
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The whole store: every event balanced per asset, and the binary's own check.
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT position, asset FROM postings GROUP BY position, asset \
         HAVING sum(amount) <> 0) x",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(unbalanced, 0);
    e2e::assert_verifies(&db);
    drop(server);
    db.drop_db().await;
}

/// No stream holds the fee accounts: twenty adjustments racing to take 1.00 each out
/// of `platform:fees`, which holds 5.00, take turns on its balance. Five succeed, the rest
/// are refused `insufficient_funds`, and the account never goes below zero.
#[tokio::test]
async fn racing_adjustments_never_overdraw_a_platform_account() {
    let db = TestDb::new().await;
    let server = Arc::new(Server::start(&db, &["--no-projectors"]));
    let (id, _, _) = payment(&server, "100.00").await;
    for (path, body) in [
        ("deposits", r#"{"amount": "100.00", "reference": "ch_f"}"#),
        (
            "releases",
            r#"{"fees": [{"kind": "fee", "amount": "5.00"}]}"#,
        ),
    ] {
        let (s, text) = post(
            &server,
            &format!("/v1/payments/{id}/{path}"),
            &server.tokens.coordinator,
            body,
            Some(&key()),
        )
        .await;
        assert_eq!(s, 200, "{text}");
    }
    let answers = join_all((0..20).map(|_| {
        let server = server.clone();
        tokio::spawn(async move {
            adjust(
                &server,
                &json!({"from": "platform:fees", "to": "platform:adjustments",
                        "amount": "1.00", "asset": "USD", "reason": "fee given back"}),
            )
            .await
        })
    }))
    .await;
    let answers: Vec<(u16, String)> = answers.into_iter().map(Result::unwrap).collect();
    let ok = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(ok, 5, "{answers:?}");
    for (s, text) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(
            (*s, code(text).as_str()),
            (422, "insufficient_funds"),
            "{text}"
        );
    }
    assert_eq!(balance(&db.admin, "platform:fees").await, Decimal::ZERO);
    // No AML fee taken: none can be given back, and a refusal writes nothing.
    let before = all_events(&db.admin).await;
    let (s, text) = adjust(
        &server,
        &json!({"from": "platform:aml_fees", "to": "platform:adjustments",
                "amount": "0.01", "asset": "USD", "reason": "x", "payment_id": id}),
    )
    .await;
    assert_eq!(
        (s, code(&text).as_str()),
        (422, "insufficient_funds"),
        "{text}"
    );
    assert_eq!(before, all_events(&db.admin).await);
    // Suspense is a clearing account: an adjustment out of it is not held to a balance
    // (the import leaves it below zero where it placed orphan deposits in escrow).
    let (s, text) = adjust(
        &server,
        &json!({"from": "platform:suspense", "to": "platform:adjustments",
                "amount": "0.01", "asset": "USD", "reason": "clear"}),
    )
    .await;
    assert_eq!(s, 201, "{text}");
    drop(server);
    db.drop_db().await;
}

/// An admin's adjustment, with a fresh key.
async fn adjust(server: &Server, body: &Value) -> (u16, String) {
    post(
        server,
        "/v1/adjustments",
        &server.tokens.admin,
        &body.to_string(),
        Some(&key()),
    )
    .await
}

async fn all_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}
