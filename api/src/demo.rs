//! `escrow-ledger demo`: the quick start. On the private cluster (or `DATABASE_URL`):
//! migrate, serve the API with its projectors, play a realistic day through the HTTP API
//! (payments, deposits, releases with fees, refunds, payouts, disputes with evidence and a
//! split resolution), print the trial balance, a reconciliation report, and the URLs and
//! tokens to explore it with, then keep serving until Ctrl-C.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use clap::Args;
use ledger::store::{self, PoolSettings};
use ledger::Asset;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::auth::{new_token, Role, Tokens};
use crate::db;
use crate::http::{app, AppState};
use crate::project::{signalled, Projectors};

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to serve on (falls back to any free port if taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// How many payments the day has.
    #[arg(long, default_value_t = 300)]
    pub payments: usize,
    /// Play the day (through a private port), print the report, and exit instead of
    /// serving until Ctrl-C; no tokens or curl lines are printed, since nothing serves.
    #[arg(long)]
    pub no_serve: bool,
}

struct DemoTokens {
    coordinator: String,
    admin: String,
    finance: String,
}

/// Runs the demo.
///
/// # Errors
/// The database cannot be brought up or reached, or the story fails (with the reason).
pub async fn run(
    url: Option<&str>,
    data_dir: Option<std::path::PathBuf>,
    args: DemoArgs,
) -> anyhow::Result<ExitCode> {
    println!("escrow-ledger demo");
    let options = db::resolve(url, data_dir).await?;
    let applied = db::migrate(&options).await?;
    println!("  database ready (migrations applied now: {applied:?})");
    let tokens = DemoTokens {
        coordinator: new_token(),
        admin: new_token(),
        finance: new_token(),
    };
    let mut known = Tokens::default();
    known.insert(&tokens.coordinator, Role::Coordinator, "demo-checkout");
    known.insert(&tokens.admin, Role::Admin, "demo-admin");
    known.insert(&tokens.finance, Role::Finance, "demo-finance");
    let pool = store::connect(
        options,
        &PoolSettings {
            max_connections: 24,
            ..PoolSettings::default()
        },
    )
    .await?;
    let state = AppState {
        pool: pool.clone(),
        tokens: Arc::new(known),
        metrics: crate::serve::metrics_handle(),
        notifier: ledger::store::Notifier::spawn(pool.clone()),
        commits: crate::commands::GroupCommit::spawn(&pool),
    };
    // Without serving afterwards the day is still played over HTTP, through a port of
    // its own that nothing else is told about.
    let bind = if args.no_serve {
        "127.0.0.1:0"
    } else {
        args.bind.as_str()
    };
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(l) => l,
        Err(e) => {
            println!("  {} is not free ({e}); using any free port", args.bind);
            tokio::net::TcpListener::bind("127.0.0.1:0").await?
        }
    };
    let base = format!("http://{}", listener.local_addr()?);
    let projectors = Projectors::spawn(pool.clone());
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app(state))
            .with_graceful_shutdown(async move {
                let _ = stopped.changed().await;
            })
            .await
    });
    if args.no_serve {
        println!("  playing through {base} (stopped at the end: --no-serve)");
    } else {
        println!("  serving on {base} with the projectors");
    }

    let client = Client {
        http: reqwest::Client::new(),
        base: base.clone(),
    };
    let started = Instant::now();
    let played = play(&client, &tokens, args.payments).await?;
    println!(
        "  played a day: {} commands in {:.1?} ({} payments, {} disputes)",
        played.commands,
        started.elapsed(),
        args.payments,
        played.disputes
    );
    report(&client, &tokens, played.last_position).await?;
    if args.no_serve {
        print_sql_hint();
    } else {
        print_explore(
            &base,
            &tokens,
            played.example_payment,
            played.example_dispute,
        );
    }
    std::io::stdout().flush()?;

    if !args.no_serve {
        println!("\nserving until Ctrl-C");
        std::io::stdout().flush()?;
        signalled().await;
    }
    let _ = stop.send(true);
    let _ = server.await;
    projectors.stop().await;
    Ok(ExitCode::SUCCESS)
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn post(&self, token: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("POST {path} answered {status}: {value}");
        }
        Ok(value)
    }

    async fn get(&self, token: &str, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("GET {path} answered {status}: {value}");
        }
        Ok(value)
    }
}

/// A small generator: the demo need not be reproducible, only varied.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[derive(Default)]
struct Played {
    commands: u64,
    disputes: u64,
    last_position: i64,
    example_payment: Option<String>,
    example_dispute: Option<String>,
}

impl Played {
    fn note(&mut self, answer: &Value) {
        self.commands += 1;
        if let Some(p) = answer["position"].as_i64() {
            self.last_position = self.last_position.max(p);
        }
    }
}

const OFFERS: [(&str, Asset, i64, u32); 5] = [
    ("stripe", Asset::Usd, 2_500_000, 2),
    ("stripe", Asset::Eur, 1_800_000, 2),
    ("wire", Asset::Eur, 9_000_000, 2),
    ("coinbase_commerce", Asset::Usdc, 1_500_000_000, 6),
    ("coinbase_commerce", Asset::Btc, 2_000_000, 8),
];

/// Plays the day with eight concurrent clients.
async fn play(client: &Client, tokens: &DemoTokens, payments: usize) -> anyhow::Result<Played> {
    let seed = u64::try_from(Utc::now().timestamp_micros()).unwrap_or(7) | 1;
    let lanes = 8;
    let mut total = Played::default();
    let results = futures::future::join_all((0..lanes).map(|lane| {
        let count = payments / lanes + usize::from(lane < payments % lanes);
        async move {
            let mut dice = Dice(seed.wrapping_mul(lane as u64 + 1) | 1);
            let mut played = Played::default();
            for _ in 0..count {
                one_payment(client, tokens, &mut dice, &mut played).await?;
            }
            Ok::<_, anyhow::Error>(played)
        }
    }))
    .await;
    for r in results {
        let p = r?;
        total.commands += p.commands;
        total.disputes += p.disputes;
        total.last_position = total.last_position.max(p.last_position);
        total.example_payment = total.example_payment.or(p.example_payment);
        total.example_dispute = total.example_dispute.or(p.example_dispute);
    }
    Ok(total)
}

fn fee(amount: Decimal, per_mille: i64, asset: Asset) -> Option<String> {
    let f = (amount * Decimal::new(per_mille, 3)).round_dp(asset.scale());
    (f > Decimal::ZERO && f < amount).then(|| asset.format(f))
}

/// One payment's story, chosen by the dice.
async fn one_payment(
    client: &Client,
    tokens: &DemoTokens,
    dice: &mut Dice,
    played: &mut Played,
) -> anyhow::Result<()> {
    let (provider, asset, max_units, scale) = OFFERS[usize::try_from(dice.roll(5))?];
    let units = 1_000 + i64::try_from(dice.roll(u64::try_from(max_units)?))?;
    let amount = Decimal::new(units, scale);
    let created = client
        .post(
            &tokens.coordinator,
            "/v1/payments",
            &json!({
                "buyer": {"kind": "entity", "id": Uuid::new_v4()},
                "seller": {"kind": "entity", "id": Uuid::new_v4()},
                "purchase_request": {"kind": "entity", "id": Uuid::new_v4()},
                "amount": asset.format(amount), "asset": asset.code(), "provider": provider,
                "metadata": {"channel": if dice.roll(2) == 0 { "web" } else { "mobile" }}
            }),
        )
        .await?;
    played.note(&created);
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let story = dice.roll(100);
    if story < 6 {
        let path = format!("/v1/payments/{id}/cancellation");
        let r = client
            .post(&tokens.coordinator, &path, &json!({"reason": "buyer left"}))
            .await?;
        played.note(&r);
        return Ok(());
    }
    if story < 12 {
        return Ok(()); // still awaiting the deposit at the end of the day
    }
    deposit(client, tokens, dice, played, &id, provider, amount, asset).await?;
    let mut fees = vec![];
    if let Some(f) = fee(amount, 25, asset) {
        fees.push(json!({"kind": "fee", "amount": f}));
    }
    if provider == "coinbase_commerce" {
        if let Some(f) = fee(amount, 1, asset) {
            fees.push(json!({"kind": "aml_fee", "amount": f}));
        }
    }
    let path = |what: &str| format!("/v1/payments/{id}/{what}");
    let coordinator = &tokens.coordinator;
    match story {
        12..=61 => {
            let r = client
                .post(coordinator, &path("releases"), &json!({"fees": fees}))
                .await?;
            played.note(&r);
            if dice.roll(10) < 7 {
                let state = client
                    .get(
                        coordinator,
                        &format!("/v1/payments/{id}?min_position={}", played.last_position),
                    )
                    .await?;
                let number = |field: &str| state[field].as_str().unwrap_or("0").parse::<Decimal>();
                let net = number("released")? - number("fees")? - number("aml_fees")?;
                let body = json!({"party": "seller", "amount": asset.format(net), "reference": format!("po-{id}")});
                let r = client.post(coordinator, &path("payouts"), &body).await?;
                played.note(&r);
            }
        }
        62..=75 => {
            let r = client
                .post(coordinator, &path("refunds"), &json!({}))
                .await?;
            played.note(&r);
        }
        76..=83 => {
            let half = asset.format((amount / Decimal::TWO).round_dp(scale));
            let body = json!({"amount": half, "fees": []});
            let r = client.post(coordinator, &path("releases"), &body).await?;
            played.note(&r);
            let r = client
                .post(coordinator, &path("refunds"), &json!({}))
                .await?;
            played.note(&r);
        }
        84..=95 => dispute(client, tokens, dice, played, &id, amount, asset).await?,
        _ => {} // funded, waiting for the goods
    }
    if played.example_payment.is_none() {
        played.example_payment = Some(id);
    }
    Ok(())
}

/// The deposit, sometimes in two parts, dated up to a day back.
#[allow(clippy::too_many_arguments)]
async fn deposit(
    client: &Client,
    tokens: &DemoTokens,
    dice: &mut Dice,
    played: &mut Played,
    id: &str,
    provider: &str,
    amount: Decimal,
    asset: Asset,
) -> anyhow::Result<()> {
    let hours_ago = i64::try_from(dice.roll(24))?;
    let at = (Utc::now() - TimeDelta::hours(hours_ago) - TimeDelta::minutes(5)).to_rfc3339();
    let first = if dice.roll(4) == 0 {
        (amount / Decimal::TWO).round_dp(asset.scale())
    } else {
        amount
    };
    for (n, part) in [first, amount - first].into_iter().enumerate() {
        if part > Decimal::ZERO {
            let body = json!({"amount": asset.format(part), "reference": format!("{provider}-{id}-{n}"), "occurred_at": at});
            let r = client
                .post(
                    &tokens.coordinator,
                    &format!("/v1/payments/{id}/deposits"),
                    &body,
                )
                .await?;
            played.note(&r);
        }
    }
    Ok(())
}

async fn dispute(
    c: &Client,
    t: &DemoTokens,
    dice: &mut Dice,
    played: &mut Played,
    payment: &str,
    amount: Decimal,
    asset: Asset,
) -> anyhow::Result<()> {
    let buyer = json!({"kind": "entity", "id": Uuid::new_v4()});
    let reason =
        ["item_not_received", "not_as_described", "payment_issue"][usize::try_from(dice.roll(3))?];
    let priority = ["low", "medium", "high", "urgent"][usize::try_from(dice.roll(4))?];
    let opened = c
        .post(
            &t.coordinator,
            "/v1/disputes",
            &json!({"payment_id": payment, "opened_by": buyer, "role": "buyer",
                    "reason": reason,
                    "description": "The parcel arrived opened and the item is scratched."}),
        )
        .await?;
    played.note(&opened);
    played.disputes += 1;
    let d = opened["id"].as_str().unwrap_or_default().to_owned();
    let path = |what: &str| format!("/v1/disputes/{d}/{what}");
    let admin = json!({"kind": "entity", "id": Uuid::from_u128(0xAD)});
    let steps = [
        (
            &t.coordinator,
            path("evidence"),
            json!({"submitted_by": buyer, "type": "image", "url": "https://files.example.com/parcel.jpg", "description": "the box as delivered"}),
        ),
        (
            &t.coordinator,
            path("messages"),
            json!({"author": buyer, "author_role": "buyer", "body": "See the photo: it was opened before delivery."}),
        ),
        (&t.admin, path("assignment"), json!({"admin": admin})),
        (&t.admin, path("priority"), json!({"priority": priority})),
        (
            &t.admin,
            path("status"),
            json!({"status": "under_review", "note": "asked both parties"}),
        ),
        (
            &t.coordinator,
            path("evidence"),
            json!({"submitted_by": {"kind": "external", "ref": "carrier-dhl"}, "type": "document", "url": "https://files.example.com/pod.pdf", "description": "proof of delivery"}),
        ),
        (
            &t.admin,
            path("messages"),
            json!({"author": admin, "author_role": "admin", "body": "Splitting: the buyer keeps the item at a discount."}),
        ),
    ];
    for (token, p, body) in &steps {
        let r = c.post(token, p, body).await?;
        played.note(&r);
    }
    let scale = asset.scale();
    // A lane's first dispute always ends in a split, so every day shows one.
    let roll = if played.example_dispute.is_none() {
        0
    } else {
        dice.roll(6)
    };
    let end = match roll {
        0..=2 => {
            let seller = (amount * Decimal::new(6, 1)).round_dp(scale);
            json!({"outcome": "split", "seller_amount": asset.format(seller), "buyer_amount": asset.format(amount - seller),
                   "fees": fee(seller, 25, asset).map(|f| vec![json!({"kind": "fee", "amount": f})]).unwrap_or_default(),
                   "note": "60/40 split"})
        }
        3 => json!({"outcome": "refund_to_buyer", "note": "never delivered"}),
        4 => json!({"outcome": "release_to_seller", "note": "delivered as described"}),
        _ => {
            let r = c
                .post(
                    &t.admin,
                    &path("status"),
                    &json!({"status": "rejected", "note": "no grounds"}),
                )
                .await?;
            played.note(&r);
            played.example_dispute.get_or_insert(d);
            return Ok(());
        }
    };
    let r = c.post(&t.admin, &path("resolution"), &end).await?;
    played.note(&r);
    if end["outcome"] == "split" && played.example_dispute.is_none() {
        played.example_dispute = Some(d);
    }
    Ok(())
}

/// Prints the trial balance and a reconciliation report once the projections caught up.
async fn report(c: &Client, t: &DemoTokens, position: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    let tb = loop {
        match c
            .get(
                &t.finance,
                &format!("/v1/reconciliation/trial-balance?min_position={position}"),
            )
            .await
        {
            Ok(v) => break v,
            Err(e) if started.elapsed() < Duration::from_secs(90) => {
                tracing::info!(error = %e, "waiting for the projections");
            }
            Err(e) => return Err(e),
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nTRIAL BALANCE (every account's balance per asset; each total must be zero)"
    );
    let _ = writeln!(out, "  {:<6} {:>10} {:>24}", "asset", "accounts", "total");
    for total in tb["totals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<6} {:>10} {:>24}",
            s(&total["asset"]),
            s(&total["accounts"]),
            s(&total["total"])
        );
    }
    let _ = writeln!(out, "  balanced: {}", tb["balanced"]);
    let _ = writeln!(out, "  platform and provider accounts:");
    for a in tb["accounts"].as_array().into_iter().flatten() {
        let name = s(&a["account"]);
        if name.starts_with("platform:") || name.starts_with("external:") {
            let _ = writeln!(
                out,
                "    {:<30} {:<5} {:>24}",
                name,
                s(&a["asset"]),
                s(&a["balance"])
            );
        }
    }
    let buckets = c
        .get(
            &t.finance,
            &format!("/v1/reconciliation/buckets?group_by=provider,status&min_position={position}"),
        )
        .await?;
    let _ = writeln!(
        out,
        "\nRECONCILIATION (today's payments by provider, status and asset)"
    );
    let _ = writeln!(
        out,
        "  {:<18} {:<19} {:<5} {:>4} {:>20} {:>20} {:>18} {:>20}",
        "provider", "status", "asset", "n", "deposited", "held", "fees", "paid out"
    );
    for b in buckets["buckets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<18} {:<19} {:<5} {:>4} {:>20} {:>20} {:>18} {:>20}",
            s(&b["provider"]),
            s(&b["status"]),
            s(&b["asset"]),
            s(&b["payments"]),
            s(&b["deposited"]),
            s(&b["held"]),
            s(&b["fees"]),
            s(&b["paid_out"])
        );
    }
    print!("{out}");
    Ok(())
}

fn s(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn print_explore(base: &str, t: &DemoTokens, payment: Option<String>, dispute: Option<String>) {
    let payment = payment.unwrap_or_else(|| "<payment id>".into());
    let dispute = dispute.unwrap_or_else(|| "<dispute id>".into());
    println!("\nEXPLORE");
    println!("  tokens (valid while this demo runs):");
    println!("    coordinator  {}", t.coordinator);
    println!("    admin        {}", t.admin);
    println!("    finance      {}", t.finance);
    println!("  try:");
    println!(
        "    curl -s -H 'Authorization: Bearer {}' {base}/v1/payments/{payment}",
        t.coordinator
    );
    println!(
        "    curl -s -H 'Authorization: Bearer {}' {base}/v1/payments/{payment}/events",
        t.coordinator
    );
    println!(
        "    curl -s -H 'Authorization: Bearer {}' '{base}/v1/disputes?status=all&limit=5'",
        t.admin
    );
    println!(
        "    curl -s -H 'Authorization: Bearer {}' {base}/v1/disputes/{dispute}",
        t.admin
    );
    println!(
        "    curl -s -H 'Authorization: Bearer {}' '{base}/v1/accounts?prefix=platform:'",
        t.finance
    );
    println!("    curl -s -H 'Authorization: Bearer {}' -H 'Accept: text/csv' '{base}/v1/reconciliation/buckets?group_by=provider,asset,day'", t.finance);
    println!(
        "    curl -s -H 'Authorization: Bearer {}' {base}/v1/reconciliation/trial-balance",
        t.finance
    );
    println!("    curl -s {base}/readyz ; curl -s {base}/metrics | grep projection_lag");
    println!(
        "    curl -s -H 'Authorization: Bearer {}' {base}/openapi.json",
        t.finance
    );
    print_sql_hint();
}

/// What to query with SQL: the finance views hold the day after the demo stops too.
fn print_sql_hint() {
    println!("  SQL: the views of schema `finance` (docs/read-views.md), e.g.");
    println!("    SELECT provider, asset, sum(payments), sum(deposited), sum(fees) FROM finance.reconciliation_buckets GROUP BY 1, 2;");
}
