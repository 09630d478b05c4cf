//! The projectors against a real PostgreSQL: a randomized history of thousands of commands
//! decided by the aggregates and appended by concurrent writers while the runner follows
//! it; then the read tables against the postings rows, the aggregates' own states, a full
//! rebuild row by row, `as_of` at a dozen instants, a swap waiting for a long report, and
//! a projector that halts and says why.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use e2e::TestDb;
use ledger::dispute::{
    AuthorRole, Dispute, DisputeEvent, DisputeReason, DisputeStatus, EvidenceType, OpenDispute,
    Outcome, PartyRole, PostMessage, Priority, Resolve, SubmitEvidence,
};
use ledger::event::{Actor, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use ledger::payment::{
    Adjustment, AdjustmentPosted, Cancel, CreatePayment, Deposit, Fee, FeeKind, Party, Payment,
    PaymentEvent, Payout, Refund, Release, Settlement,
};
use ledger::posting::transfer;
use ledger::store::EventStore;
use ledger::{Account, Asset, Reference};
use projections::{Projection, RebuildSettings, RunnerSettings};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// A small deterministic generator (xorshift64*): a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = usize::try_from(self.below(items.len() as u64)).unwrap();
        &items[i]
    }
}

fn meta(name: &str) -> Metadata {
    Metadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor {
            name: name.into(),
            role: "coordinator".into(),
        },
        source: "test".into(),
        legacy: None,
    }
}

fn after(version: i64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}

/// A random part of `of` (at least one unit of the asset), or `None` if `of` is nothing.
fn part(rng: &mut Rng, asset: Asset, of: Decimal) -> Option<Decimal> {
    let unit = Decimal::new(1, asset.scale());
    if of < unit {
        return None;
    }
    let units = (of / unit).trunc();
    let units = u64::try_from(units.mantissa()).unwrap_or(1).max(1);
    let n = 1 + rng.below(units);
    Some(Decimal::from(n) * unit)
}

fn fees(rng: &mut Rng, asset: Asset, gross: Decimal) -> Vec<Fee> {
    let mut out = Vec::new();
    if rng.chance(50) {
        if let Some(f) = part(rng, asset, gross / Decimal::from(20)) {
            out.push(Fee {
                kind: FeeKind::Fee,
                amount: f,
            });
        }
    }
    if rng.chance(20) {
        if let Some(f) = part(rng, asset, gross / Decimal::from(50)) {
            out.push(Fee {
                kind: FeeKind::AmlFee,
                amount: f,
            });
        }
    }
    out
}

/// A decided resolution and the payment's settlement of it.
type Resolution = (
    Result<Vec<DisputeEvent>, ledger::dispute::DisputeError>,
    Vec<PaymentEvent>,
);

/// One writer's share of the world: its payments and their disputes.
struct Writer {
    rng: Rng,
    store: EventStore,
    name: String,
    clock: DateTime<Utc>,
    payments: Vec<(Uuid, Payment)>,
    disputes: HashMap<Uuid, (Uuid, Dispute)>,
    accepted: u64,
    refused: u64,
}

const PROVIDERS: [&str; 3] = ["stripe", "coinbase_commerce", "wire"];
const ASSETS: [Asset; 4] = [Asset::Usd, Asset::Eur, Asset::Usdt, Asset::Btc];

impl Writer {
    async fn append(&mut self, appends: Vec<StreamAppend>) -> bool {
        match self.store.append(&appends).await {
            Ok(_) => {
                self.accepted += 1;
                true
            }
            Err(e) => panic!("append refused: {e}"),
        }
    }

    fn payment_append(&self, i: usize, events: &[PaymentEvent], at: DateTime<Utc>) -> StreamAppend {
        let (id, p) = &self.payments[i];
        StreamAppend {
            stream_id: *id,
            stream_type: "payment".into(),
            expected: after(p.version),
            events: p.new_events(events, &meta(&self.name), at),
        }
    }

    fn apply_payment(&mut self, i: usize, events: &[PaymentEvent], at: DateTime<Utc>) {
        let p = &mut self.payments[i].1;
        for e in events {
            p.apply(e, at);
        }
    }

    /// Decides and appends one random command; refusals are counted, not appended.
    async fn one(&mut self) {
        self.clock += TimeDelta::seconds(i64::try_from(self.rng.below(900)).unwrap());
        let now = self.clock;
        if self.payments.is_empty() || self.rng.chance(12) {
            return self.create(now).await;
        }
        let i = usize::try_from(self.rng.below(self.payments.len() as u64)).unwrap();
        let (id, p) = self.payments[i].clone();
        let Some(terms) = p.terms.clone() else { return };
        let asset = terms.asset;
        let open = self
            .disputes
            .get(&id)
            .filter(|(_, d)| !d.is_ended())
            .cloned();
        if let Some((dispute_id, d)) = open {
            if self.rng.chance(60) {
                return self.dispute_step(i, dispute_id, d, now).await;
            }
        }
        let decided = match self.rng.below(100) {
            0..=34 => {
                let left = terms.amount - p.deposited;
                let excess = self.rng.chance(8);
                let amount = if excess {
                    left.max(Decimal::ZERO) + Decimal::new(5, 0)
                } else if self.rng.chance(60) {
                    left
                } else {
                    part(&mut self.rng, asset, left).unwrap_or(left)
                };
                let back = TimeDelta::minutes(i64::try_from(self.rng.below(60 * 71)).unwrap());
                let at = now - back;
                let cmd = Deposit {
                    amount,
                    reference: format!("ref-{}", Uuid::new_v4().simple()),
                    occurred_at: at,
                    allow_excess: excess,
                };
                p.deposit(&cmd, now).map(|e| (e, at))
            }
            35..=54 => {
                let amount = if self.rng.chance(50) {
                    None
                } else {
                    part(&mut self.rng, asset, p.releasable())
                };
                let gross = amount.unwrap_or_else(|| p.releasable());
                let fees = fees(&mut self.rng, asset, gross);
                p.release(&Release { amount, fees }).map(|e| (e, now))
            }
            55..=66 => {
                let amount = if self.rng.chance(50) {
                    None
                } else {
                    part(&mut self.rng, asset, p.held)
                };
                let gross = amount.unwrap_or(p.held);
                let fees = fees(&mut self.rng, asset, gross);
                p.refund(&Refund { amount, fees }).map(|e| (e, now))
            }
            67..=78 => {
                let (party, share) = if self.rng.chance(70) {
                    (Party::Seller, p.seller_share)
                } else {
                    (Party::Buyer, p.buyer_share)
                };
                let Some(amount) = part(&mut self.rng, asset, share) else {
                    self.refused += 1;
                    return;
                };
                p.payout(&Payout {
                    party,
                    amount,
                    reference: format!("po-{}", Uuid::new_v4().simple()),
                })
                .map(|e| (e, now))
            }
            79..=82 => p
                .cancel(&Cancel {
                    reason: "buyer changed their mind".into(),
                })
                .map(|e| (e, now)),
            83..=88 => return self.adjust(i, now).await,
            _ => return self.open_dispute(i, now).await,
        };
        match decided {
            Ok((events, at)) if !events.is_empty() => {
                let a = self.payment_append(i, &events, at);
                if self.append(vec![a]).await {
                    self.apply_payment(i, &events, at);
                }
            }
            _ => self.refused += 1,
        }
    }

    async fn create(&mut self, now: DateTime<Utc>) {
        let asset = *self.rng.pick(&ASSETS);
        let id = Uuid::new_v4();
        let amount = Decimal::new(
            i64::try_from(100 + self.rng.below(500_000)).unwrap(),
            asset.scale().min(4),
        );
        let cmd = CreatePayment {
            payment_id: id,
            buyer: Reference::entity(Uuid::new_v4()),
            seller: if self.rng.chance(20) {
                Reference::external(format!("shop-{}", self.rng.below(5)))
            } else {
                Reference::entity(Uuid::new_v4())
            },
            purchase_request: Reference::entity(Uuid::new_v4()),
            seller_offer: None,
            amount,
            asset,
            provider: (*self.rng.pick(&PROVIDERS)).to_owned(),
            metadata: self
                .rng
                .chance(30)
                .then(|| serde_json::json!({"order": self.rng.below(1000)})),
        };
        let events = Payment::default().create(cmd).expect("a valid payment");
        self.payments.push((id, Payment::default()));
        let i = self.payments.len() - 1;
        let a = self.payment_append(i, &events, now);
        if self.append(vec![a]).await {
            self.apply_payment(i, &events, now);
        }
    }

    async fn adjust(&mut self, i: usize, now: DateTime<Utc>) {
        let (id, p) = self.payments[i].clone();
        let Some(terms) = p.terms.clone() else { return };
        if self.rng.chance(30) {
            // Between platform accounts, a stream of its own.
            let amount = Decimal::new(i64::try_from(1 + self.rng.below(999)).unwrap(), 2);
            let adj = AdjustmentPosted {
                adjustment_id: Uuid::new_v4(),
                from: Account::PlatformSuspense,
                to: Account::PlatformAdjustments,
                amount,
                asset: Asset::Usd,
                reason: "reclassify".into(),
            };
            let event = NewEvent::new(
                "AdjustmentPosted",
                serde_json::to_value(&adj).unwrap(),
                &meta(&self.name),
                now,
                transfer(adj.from.clone(), adj.to.clone(), adj.asset, amount).to_vec(),
            );
            self.append(vec![StreamAppend {
                stream_id: adj.adjustment_id,
                stream_type: "adjustment".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![event],
            }])
            .await;
            return;
        }
        let (from, to, available) = if self.rng.chance(50) {
            (Account::Escrow(id), Account::PlatformAdjustments, p.held)
        } else {
            (
                Account::PlatformAdjustments,
                Account::Seller(terms.seller.clone()),
                Decimal::new(100, 0),
            )
        };
        let Some(amount) = part(
            &mut self.rng,
            terms.asset,
            available.min(Decimal::new(100, 0)),
        ) else {
            self.refused += 1;
            return;
        };
        let cmd = Adjustment {
            adjustment_id: Uuid::new_v4(),
            from,
            to,
            amount,
            asset: terms.asset,
            reason: "correction".into(),
        };
        match p.adjust(&cmd) {
            Ok(events) => {
                let a = self.payment_append(i, &events, now);
                if self.append(vec![a]).await {
                    self.apply_payment(i, &events, now);
                }
            }
            Err(_) => self.refused += 1,
        }
    }

    async fn open_dispute(&mut self, i: usize, now: DateTime<Utc>) {
        let (id, p) = self.payments[i].clone();
        if self.disputes.get(&id).is_some_and(|(_, d)| !d.is_ended()) {
            self.refused += 1;
            return;
        }
        let dispute_id = Uuid::new_v4();
        let Some(terms) = &p.terms else { return };
        let cmd = OpenDispute {
            dispute_id,
            payment_id: id,
            opened_by: terms.buyer.clone(),
            role: PartyRole::Buyer,
            reason: *self.rng.pick(&[
                DisputeReason::ItemNotReceived,
                DisputeReason::NotAsDescribed,
                DisputeReason::Fraud,
            ]),
            description: "it never came".into(),
            priority: *self
                .rng
                .pick(&[Priority::Low, Priority::Medium, Priority::High]),
        };
        let d = Dispute::default();
        let (Ok(opened), Ok(frozen)) = (d.open(cmd), p.freeze(dispute_id)) else {
            self.refused += 1;
            return;
        };
        let dispute_append = StreamAppend {
            stream_id: dispute_id,
            stream_type: "dispute".into(),
            expected: ExpectedVersion::NoStream,
            events: ledger::dispute::new_events(&opened, &meta(&self.name), now),
        };
        let pay = self.payment_append(i, &frozen, now);
        if self.append(vec![dispute_append, pay]).await {
            let mut d = Dispute::default();
            for e in &opened {
                d.apply(e, now);
            }
            self.disputes.insert(id, (dispute_id, d));
            self.apply_payment(i, &frozen, now);
        }
    }

    /// A random resolution and the payment's settlement of it (`None`: refused).
    fn resolution(&mut self, p: &Payment, d: &Dispute, dispute_id: Uuid) -> Option<Resolution> {
        let asset = p.terms.as_ref().map_or(Asset::Usd, |t| t.asset);
        let outcome = *self.rng.pick(&[
            Outcome::ReleaseToSeller,
            Outcome::RefundToBuyer,
            Outcome::Split,
            Outcome::NoAction,
        ]);
        let (seller_amount, buyer_amount) = if outcome == Outcome::Split {
            let s = part(&mut self.rng, asset, p.held).unwrap_or(Decimal::ZERO);
            (Some(s), Some(p.held - s))
        } else {
            (None, None)
        };
        let fees = if outcome == Outcome::NoAction {
            Vec::new()
        } else {
            fees(
                &mut self.rng,
                asset,
                seller_amount.unwrap_or(p.held) / Decimal::TWO,
            )
        };
        let decided = d.resolve(Resolve {
            outcome,
            seller_amount,
            buyer_amount,
            fees,
            note: Some("decided".into()),
        });
        let mut settled = Vec::new();
        if let Ok(events) = &decided {
            let resolved = events.iter().find_map(|e| match e {
                DisputeEvent::DisputeResolved(r) => Some(r.clone()),
                _ => None,
            })?;
            settled = p
                .settle_dispute(&Settlement::from_resolution(dispute_id, &resolved))
                .ok()?;
        }
        Some((decided, settled))
    }

    async fn dispute_step(&mut self, i: usize, dispute_id: Uuid, d: Dispute, now: DateTime<Utc>) {
        let p = self.payments[i].1.clone();
        let admin = Reference::entity(Uuid::from_u128(7));
        let mut payment_events = Vec::new();
        let decided = match self.rng.below(100) {
            0..=24 => d.submit_evidence(SubmitEvidence {
                evidence_id: Uuid::new_v4(),
                submitted_by: d.opened.as_ref().unwrap().opened_by.clone(),
                evidence_type: EvidenceType::Image,
                url: Some("https://example.com/photo.jpg".into()),
                description: None,
            }),
            25..=49 => d.post_message(PostMessage {
                message_id: Uuid::new_v4(),
                author: admin.clone(),
                author_role: AuthorRole::Admin,
                body: "please send the tracking number".into(),
                attachments: vec!["label.pdf".into()],
            }),
            50..=59 => d.assign(admin.clone()),
            60..=69 => d.set_priority(*self.rng.pick(&[Priority::Urgent, Priority::Low])),
            70..=79 => {
                let status = *self.rng.pick(&[
                    DisputeStatus::UnderReview,
                    DisputeStatus::AwaitingSeller,
                    DisputeStatus::Rejected,
                    DisputeStatus::Withdrawn,
                ]);
                let decided = d.change_status(status, Some("moving on".into()));
                if decided.is_ok() && status.unfreezes_escrow() {
                    let Ok(e) = p.unfreeze(dispute_id, status) else {
                        self.refused += 1;
                        return;
                    };
                    payment_events = e;
                }
                decided
            }
            _ => {
                let Some((decided, settled)) = self.resolution(&p, &d, dispute_id) else {
                    self.refused += 1;
                    return;
                };
                payment_events = settled;
                decided
            }
        };
        let Ok(events) = decided else {
            self.refused += 1;
            return;
        };
        let mut appends = vec![StreamAppend {
            stream_id: dispute_id,
            stream_type: "dispute".into(),
            expected: ExpectedVersion::Exact(d.version),
            events: ledger::dispute::new_events(&events, &meta(&self.name), now),
        }];
        if !payment_events.is_empty() {
            appends.push(self.payment_append(i, &payment_events, now));
        }
        if self.append(appends).await {
            let entry = self.disputes.get_mut(&self.payments[i].0).unwrap();
            for e in &events {
                entry.1.apply(e, now);
            }
            self.apply_payment(i, &payment_events, now);
        }
    }
}

/// Runs `writers` concurrent writers of `commands` commands each; returns their worlds.
async fn history(pool: &PgPool, seed: u64, writers: u64, commands: u64) -> Vec<Writer> {
    let start = Utc::now() - TimeDelta::days(12);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = EventStore::new(pool.clone());
        tasks.push(tokio::spawn(async move {
            let mut writer = Writer {
                rng: Rng::new(seed.wrapping_mul(31).wrapping_add(w + 1)),
                store,
                name: format!("writer-{w}"),
                clock: start,
                payments: Vec::new(),
                disputes: HashMap::new(),
                accepted: 0,
                refused: 0,
            };
            for _ in 0..commands {
                writer.one().await;
            }
            writer
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn seed() -> u64 {
    std::env::var("PROJECTIONS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::try_from(Utc::now().timestamp_micros()).unwrap_or(42))
}

/// Waits until every projector has applied everything committed.
async fn settle(pool: &PgPool) {
    let start = Instant::now();
    loop {
        let st = projections::status(pool).await.unwrap();
        if st.iter().all(|s| s.lag_events == 0) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "projectors did not catch up: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Catches up until everything committed is applied: other tests' transactions on the
/// same cluster hold the feed's watermark back for a moment (it is cluster-wide).
async fn project_all(pool: &PgPool) {
    let start = Instant::now();
    loop {
        projections::catch_up(pool, &RunnerSettings::default())
            .await
            .unwrap();
        let st = projections::status(pool).await.unwrap();
        if st.iter().all(|s| s.lag_events == 0) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no catching up: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scalar_i64(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A payment's status and money as the view shows them.
type PaymentMoney = (
    Uuid,
    String,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    i64,
    Option<Uuid>,
);

/// Rows of `a` not in `b` plus rows of `b` not in `a`.
async fn difference(pool: &PgPool, a: &str, b: &str) -> i64 {
    scalar_i64(
        pool,
        &format!(
            // Rows compared as PostgreSQL prints them: `0.00` and `0` are equal numerics
            // but not the same figure on a finance report.
            "SELECT (SELECT count(*) FROM (SELECT r::text FROM {a} r EXCEPT ALL SELECT r::text FROM {b} r) x) \
                  + (SELECT count(*) FROM (SELECT r::text FROM {b} r EXCEPT ALL SELECT r::text FROM {a} r) y)"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_random_history_projects_to_the_postings_and_rebuilds_identically() {
    let seed = seed();
    println!("PROJECTIONS_SEED={seed}");
    let db = TestDb::new().await;
    let pool = db.service_pool(12).await;

    // The runner follows while four writers append, in small batches.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = tokio::spawn(projections::follow(
        pool.clone(),
        RunnerSettings {
            batch_size: 37,
            poll_interval: Duration::from_millis(50),
            projections: Projection::ALL.to_vec(),
        },
        stopped,
    ));
    let started = Instant::now();
    let writers = history(&pool, seed, 4, 1250).await;
    let accepted: u64 = writers.iter().map(|w| w.accepted).sum();
    let refused: u64 = writers.iter().map(|w| w.refused).sum();
    println!(
        "{accepted} commands appended, {refused} refused, in {:?}",
        started.elapsed()
    );
    assert!(
        accepted > 2000,
        "too few commands were accepted: {accepted}"
    );
    settle(&pool).await;
    stop.send(true).unwrap();
    runner.await.unwrap();

    assert_sums(&pool).await;
    let payments = assert_states(&pool, &writers).await;
    assert_as_of(&pool, seed).await;
    assert_rebuild_identical(&db).await;
    // The views now read side b, and the old side was emptied.
    let live: i64 = scalar_i64(&pool, "SELECT count(*) FROM finance.payments").await;
    assert_eq!(usize::try_from(live).unwrap(), payments);
    assert_eq!(
        scalar_i64(&db.admin, "SELECT count(*) FROM projection.payments_a").await,
        0
    );
    let sides: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT active_side FROM projection.projector_state")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(sides, vec!["b".to_owned()]);
    db.drop_db().await;
}

/// Balances, the trial balance and the buckets against the postings and the payments.
async fn assert_sums(pool: &PgPool) {
    // Balances equal sums straight from the postings rows.
    let differing = scalar_i64(
        pool,
        "WITH src AS (SELECT account, asset, sum(amount) AS balance FROM postings GROUP BY 1, 2) \
         SELECT count(*) FROM src FULL JOIN finance.account_balances b \
             ON b.account = src.account AND b.asset = src.asset \
         WHERE b.balance IS DISTINCT FROM src.balance",
    )
    .await;
    assert_eq!(differing, 0, "balances differ from the postings");
    let history_rows = scalar_i64(pool, "SELECT count(*) FROM finance.balance_history").await;
    let postings_rows = scalar_i64(pool, "SELECT count(*) FROM postings").await;
    assert_eq!(history_rows, postings_rows);

    // The trial balance is zero per asset, and equals the balances' sums.
    let unbalanced = scalar_i64(
        pool,
        "SELECT count(*) FROM finance.trial_balance t \
         LEFT JOIN (SELECT asset, sum(balance) s FROM finance.account_balances GROUP BY asset) b USING (asset) \
         WHERE t.total <> 0 OR b.s <> 0",
    )
    .await;
    assert_eq!(unbalanced, 0);
    assert!(scalar_i64(pool, "SELECT count(*) FROM finance.trial_balance").await >= 3);

    // Bucket sums equal sums over the payments view.
    let buckets = scalar_i64(
        pool,
        "WITH agg AS (SELECT provider, status, asset, created_day AS day, count(*) AS payments, \
                             sum(amount) AS amount, sum(held) AS held, sum(released) AS released, \
                             sum(refunded) AS refunded, sum(fees) AS fees, sum(aml_fees) AS aml_fees, \
                             sum(paid_out) AS paid_out, sum(deposited) AS deposited \
                      FROM finance.payments GROUP BY 1, 2, 3, 4) \
         SELECT count(*) FROM agg FULL JOIN finance.reconciliation_buckets b USING (provider, status, asset, day) \
         WHERE (agg.payments, agg.amount, agg.held, agg.released, agg.refunded, agg.fees, agg.aml_fees, agg.paid_out, agg.deposited) \
               IS DISTINCT FROM (b.payments, b.amount, b.held, b.released, b.refunded, b.fees, b.aml_fees, b.paid_out, b.deposited)",
    )
    .await;
    assert_eq!(buckets, 0, "buckets differ from the payments view");
    assert!(
        scalar_i64(
            pool,
            "SELECT count(DISTINCT day) FROM finance.reconciliation_buckets"
        )
        .await
            > 3
    );
}

/// Every payment and dispute reads as its aggregate folded it; returns the payments.
async fn assert_states(pool: &PgPool, writers: &[Writer]) -> usize {
    // Every payment and dispute reads as its aggregate folded it.
    let rows: Vec<PaymentMoney> =
        sqlx::query_as(
            "SELECT payment_id, status, held, released, refunded, fees + aml_fees, version, open_dispute_id \
             FROM finance.payments",
        )
        .fetch_all(pool)
        .await
        .unwrap();
    let rows: HashMap<Uuid, _> = rows.into_iter().map(|r| (r.0, r)).collect();
    let mut payments = 0;
    for w in writers {
        for (id, p) in &w.payments {
            if !p.exists() {
                continue;
            }
            payments += 1;
            let r = rows.get(id).expect("every payment is projected");
            assert_eq!(r.1, p.status.as_str(), "status of {id}");
            assert_eq!(
                (r.2, r.3, r.4),
                (p.held, p.released, p.refunded),
                "money of {id}"
            );
            assert_eq!(r.5, p.fees + p.aml_fees);
            assert_eq!(r.6, p.version);
            assert_eq!(r.7, p.frozen_by);
        }
    }
    assert_eq!(payments, rows.len());
    let disputes: Vec<(Uuid, String, i64, i32, i32)> = sqlx::query_as(
        "SELECT dispute_id, status, version, evidence_count, message_count FROM finance.disputes",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let disputes: HashMap<Uuid, _> = disputes.into_iter().map(|r| (r.0, r)).collect();
    let mut n = 0;
    for w in writers {
        for (dispute_id, d) in w.disputes.values() {
            n += 1;
            let r = disputes
                .get(dispute_id)
                .expect("every dispute is projected");
            assert_eq!(r.1, d.status.as_str());
            assert_eq!(r.2, d.version);
            assert_eq!(usize::try_from(r.3).unwrap(), d.evidence.len());
            assert_eq!(usize::try_from(r.4).unwrap(), d.messages.len());
        }
    }
    assert!(n > 10, "too few disputes: {n}");
    let timeline = scalar_i64(pool, "SELECT count(*) FROM finance.dispute_timeline").await;
    let dispute_events = scalar_i64(
        pool,
        "SELECT count(*) FROM events WHERE stream_type = 'dispute'",
    )
    .await;
    assert_eq!(timeline, dispute_events);

    payments
}

/// `as_of` at a dozen instants equals sums over the postings up to each.
async fn assert_as_of(pool: &PgPool, seed: u64) {
    // as_of at a dozen instants equals sums over the postings up to each.
    let (first, last): (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("SELECT min(occurred_at), max(occurred_at) FROM events")
            .fetch_one(pool)
            .await
            .unwrap();
    let span = (last - first).num_seconds().max(1);
    let mut rng = Rng::new(seed ^ 0xA5A5);
    for k in 0..12 {
        let t = first
            + TimeDelta::seconds(span * k / 11 + i64::try_from(rng.below(600)).unwrap() - 300);
        let differing = sqlx::query_scalar::<_, i64>(
            "WITH src AS (SELECT p.account, p.asset, sum(p.amount) AS balance FROM postings p \
                          JOIN events e ON e.position = p.position WHERE e.occurred_at <= $1 GROUP BY 1, 2), \
                  ours AS (SELECT account, asset, sum(amount) AS balance FROM finance.balance_history \
                           WHERE occurred_at <= $1 GROUP BY 1, 2) \
             SELECT count(*) FROM src FULL JOIN ours ON ours.account = src.account AND ours.asset = src.asset \
             WHERE ours.balance IS DISTINCT FROM src.balance",
        )
        .bind(t)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(differing, 0, "as_of {t} differs");
    }
}

/// A full rebuild gives tables identical, row by row, to the incremental ones.
async fn assert_rebuild_identical(db: &TestDb) {
    // A full rebuild gives identical tables, row by row.
    for p in Projection::ALL {
        for table in p.tables() {
            sqlx::query(&format!(
                "CREATE TABLE public.snap_{table} AS SELECT * FROM projection.{table}_a"
            ))
            .execute(&db.admin)
            .await
            .unwrap();
        }
    }
    // As a rebuild killed between setting the idle side's indexes aside and building them
    // again would leave it: the next rebuild takes the definition from the live side.
    sqlx::query("DROP INDEX projection.payments_b_status_idx")
        .execute(&db.admin)
        .await
        .unwrap();
    let owner = projections::rebuild::connect(std::str::FromStr::from_str(&db.url).unwrap(), 4)
        .await
        .unwrap();
    let started = Instant::now();
    let reports = projections::rebuild(
        &owner,
        &Projection::ALL,
        &RebuildSettings {
            batch_size: 500,
            // Few enough that payments and accounts are written out while filling and
            // read back when a later event moves them.
            cached: 40,
            ..RebuildSettings::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    println!("rebuilt in {:?}: {reports:#?}", started.elapsed());
    for r in &reports {
        assert_eq!(r.side, projections::Side::B);
        assert!(!r.checks.is_empty());
    }
    // The secondary indexes set aside while filling are built again, like the live side's.
    let indexes = |side: &'static str| {
        let admin = db.admin.clone();
        async move {
            let defs: Vec<String> = sqlx::query_scalar(
                "SELECT regexp_replace(indexdef, '_[ab](\\M|_)', '_?\\1', 'g') FROM pg_indexes \
                 WHERE schemaname = 'projection' AND tablename ~ ('_' || $1 || '$') ORDER BY 1",
            )
            .bind(side)
            .fetch_all(&admin)
            .await
            .unwrap();
            defs
        }
    };
    let (a, b) = (indexes("a").await, indexes("b").await);
    assert!(a.len() > 10, "{a:?}");
    assert_eq!(a, b, "the rebuilt side has the live side's indexes");
    for p in Projection::ALL {
        for table in p.tables() {
            let rows = scalar_i64(
                &db.admin,
                &format!("SELECT count(*) FROM public.snap_{table}"),
            )
            .await;
            assert!(rows > 0, "{table} is empty");
            let diff = difference(
                &db.admin,
                &format!("public.snap_{table}"),
                &format!("projection.{table}_b"),
            )
            .await;
            assert_eq!(diff, 0, "{table}: incremental and rebuilt rows differ");
        }
    }
}

async fn owner_pool(db: &TestDb) -> PgPool {
    projections::rebuild::connect(std::str::FromStr::from_str(&db.url).unwrap(), 4)
        .await
        .unwrap()
}

async fn active_side(pool: &PgPool, projector: &str) -> String {
    sqlx::query_scalar("SELECT active_side FROM projection.projector_state WHERE projector = $1")
        .bind(projector)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_report_delays_the_swap_and_reads_one_side_whole() {
    let db = TestDb::new().await;
    let pool = db.service_pool(8).await;
    history(&pool, seed(), 2, 150).await;
    project_all(&pool).await;

    // A finance report: one repeatable-read transaction, several statements.
    let mut report = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *report)
        .await
        .unwrap();
    let totals = "SELECT count(*)::text || ' ' || coalesce(sum(abs(balance)), 0)::text \
                  FROM finance.account_balances";
    let first: String = sqlx::query_scalar(totals)
        .fetch_one(&mut *report)
        .await
        .unwrap();

    let owner = owner_pool(&db).await;
    let rebuild = tokio::spawn(async move {
        projections::rebuild(
            &owner,
            &[Projection::Balances],
            &RebuildSettings {
                lock_timeout: Duration::from_millis(100),
                ..RebuildSettings::default()
            },
            |_| {},
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!rebuild.is_finished(), "the swap must wait for the report");
    assert_eq!(active_side(&pool, "balances").await, "a");
    // Meanwhile other readers are served (each waits at most one lock_timeout).
    let started = Instant::now();
    let other: String = sqlx::query_scalar(totals).fetch_one(&pool).await.unwrap();
    assert_eq!(other, first);
    assert!(started.elapsed() < Duration::from_secs(1));
    // The report's second statement reads the same side, whole.
    let second: String = sqlx::query_scalar(totals)
        .fetch_one(&mut *report)
        .await
        .unwrap();
    assert_eq!(first, second);
    report.commit().await.unwrap();

    let reports = rebuild.await.unwrap().unwrap();
    assert_eq!(reports[0].side, projections::Side::B);
    assert_eq!(active_side(&pool, "balances").await, "b");
    let after: String = sqlx::query_scalar(totals).fetch_one(&pool).await.unwrap();
    assert_eq!(after, first);
    db.drop_db().await;
}

/// A payment created through the aggregate, appended as is.
async fn one_payment(store: &EventStore) -> (Uuid, Payment) {
    let id = Uuid::new_v4();
    let events = Payment::default()
        .create(CreatePayment {
            payment_id: id,
            buyer: Reference::entity(Uuid::new_v4()),
            seller: Reference::entity(Uuid::new_v4()),
            purchase_request: Reference::entity(Uuid::new_v4()),
            seller_offer: None,
            amount: Decimal::new(5000, 2),
            asset: Asset::Usd,
            provider: "stripe".into(),
            metadata: None,
        })
        .unwrap();
    let mut p = Payment::default();
    let new = p.new_events(&events, &meta("t"), Utc::now());
    store
        .append(&[StreamAppend {
            stream_id: id,
            stream_type: "payment".into(),
            expected: ExpectedVersion::NoStream,
            events: new,
        }])
        .await
        .unwrap();
    for e in &events {
        p.apply(e, Utc::now());
    }
    (id, p)
}

#[tokio::test]
async fn a_projector_that_cannot_decode_an_event_halts_and_says_why() {
    let db = TestDb::new().await;
    let pool = db.service_pool(4).await;
    let store = EventStore::new(pool.clone());
    let (id, _) = one_payment(&store).await;
    project_all(&pool).await;
    let bogus = store
        .append(&[StreamAppend {
            stream_id: id,
            stream_type: "payment".into(),
            expected: ExpectedVersion::Exact(1),
            events: vec![NewEvent::new(
                "FundsTeleported",
                serde_json::json!({"amount": "1.00"}),
                &meta("t"),
                Utc::now(),
                Vec::new(),
            )],
        }])
        .await
        .unwrap()[0]
        .position;

    let start = Instant::now();
    let err = loop {
        if let Err(e) = projections::catch_up(&pool, &RunnerSettings::default()).await {
            break e;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never halted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = err.to_string();
    assert!(
        text.contains("payments") && text.contains(&format!("position {bogus}")),
        "{text}"
    );
    // The watermark is cluster-wide: a transaction of a test running beside this one may
    // have hidden the event from the other projectors' last read. They apply it once it
    // is visible; payments stays halted on it.
    let start = Instant::now();
    let status = loop {
        let status = projections::status(&pool).await.unwrap();
        let others_done = status
            .iter()
            .filter(|s| s.projection != Projection::Payments)
            .all(|s| s.lag_events == 0);
        if others_done || start.elapsed() > Duration::from_secs(30) {
            break status;
        }
        let _ = projections::catch_up(&pool, &RunnerSettings::default()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for s in &status {
        match s.projection {
            Projection::Payments => {
                assert!(s
                    .halted_reason
                    .as_deref()
                    .unwrap()
                    .contains("FundsTeleported"));
                assert_eq!(s.lag_events, 1);
            }
            _ => assert_eq!((s.lag_events, s.halted_reason.as_deref()), (0, None)),
        }
    }
    // The runner keeps saying so; a rebuild cannot fold it either and leaves the live side.
    assert!(matches!(
        projections::step(&pool, Projection::Payments, 100)
            .await
            .unwrap(),
        projections::Step::Halted(_)
    ));
    let owner = owner_pool(&db).await;
    let err = projections::rebuild(
        &owner,
        &[Projection::Payments],
        &RebuildSettings::default(),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("FundsTeleported"), "{err}");
    assert_eq!(active_side(&pool, "payments").await, "a");
    assert_eq!(
        scalar_i64(&pool, "SELECT count(*) FROM finance.payments").await,
        1
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_rebuild_that_fails_its_checks_leaves_the_live_tables() {
    let db = TestDb::new().await;
    let pool = db.service_pool(4).await;
    let store = EventStore::new(pool.clone());
    let (id, p) = one_payment(&store).await;
    // A deposit whose legs name another escrow than the payment's: the fold and the
    // postings disagree (the store only checks that legs balance).
    let deposit = PaymentEvent::FundsDeposited(ledger::payment::FundsDeposited {
        amount: Decimal::new(5000, 2),
        reference: "r1".into(),
        allow_excess: false,
        excess: Decimal::ZERO,
    });
    let mut e = p
        .new_events(std::slice::from_ref(&deposit), &meta("t"), Utc::now())
        .remove(0);
    e.postings = transfer(
        Account::External("stripe".into()),
        Account::Escrow(Uuid::new_v4()),
        Asset::Usd,
        Decimal::new(5000, 2),
    )
    .to_vec();
    store
        .append(&[StreamAppend {
            stream_id: id,
            stream_type: "payment".into(),
            expected: ExpectedVersion::Exact(1),
            events: vec![e],
        }])
        .await
        .unwrap();
    project_all(&pool).await;
    let owner = owner_pool(&db).await;
    let err = projections::rebuild(
        &owner,
        &Projection::ALL,
        &RebuildSettings::default(),
        |_| {},
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("payments") && text.contains("held = its escrow account's postings"),
        "{text}"
    );
    for p in ["payments", "balances", "disputes"] {
        assert_eq!(active_side(&pool, p).await, "a", "{p} was swapped");
    }
    assert_eq!(
        scalar_i64(&pool, "SELECT count(*) FROM finance.payments").await,
        1
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_projector_processes_converge_to_an_uninterrupted_run() {
    let seed = seed();
    println!("PROJECTIONS_SEED={seed}");
    let db = TestDb::new().await;
    let pool = db.service_pool(8).await;
    let writers = tokio::spawn({
        let pool = pool.clone();
        async move { history(&pool, seed, 2, 700).await }
    });
    let mut rng = Rng::new(seed ^ 0x5EED);
    let mut kills = 0;
    // At least three kills even when the writers finish first: the later ones land in
    // the catch-up.
    while !writers.is_finished() || kills < 3 {
        let mut child = std::process::Command::new(e2e::binary())
            .args(["project", "--follow"])
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100 + rng.below(500))).await;
        child.kill().unwrap(); // SIGKILL: mid-batch, mid-commit, wherever it is
        child.wait().unwrap();
        kills += 1;
    }
    writers.await.unwrap();
    assert!(kills >= 3, "only {kills} kills");
    // Restarted once more to the end, as `project` (catch up and exit).
    let out = e2e::run_binary(&["project"], &[("DATABASE_URL", db.url.as_str())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("caught up"));
    project_all(&pool).await;

    for p in Projection::ALL {
        for table in p.tables() {
            sqlx::query(&format!(
                "CREATE TABLE public.snap_{table} AS SELECT * FROM projection.{table}_a"
            ))
            .execute(&db.admin)
            .await
            .unwrap();
        }
    }
    // An uninterrupted run: the binary's own rebuild.
    let out = e2e::run_binary(&["rebuild", "--all"], &[("DATABASE_URL", db.url.as_str())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("side b is live"), "{stdout}");
    for p in Projection::ALL {
        for table in p.tables() {
            let diff = difference(
                &db.admin,
                &format!("public.snap_{table}"),
                &format!("projection.{table}_b"),
            )
            .await;
            assert_eq!(
                diff, 0,
                "{table}: killed runs and an uninterrupted run differ"
            );
        }
    }
    println!("{kills} kills");
    let out = e2e::run_binary(&["rebuild", "nope"], &[("DATABASE_URL", db.url.as_str())]);
    assert_eq!(out.status.code(), Some(2));
    db.drop_db().await;
}
