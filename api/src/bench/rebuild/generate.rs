//! The data of `bench rebuild`: a simulated marketplace whose payments and disputes live
//! their [`Plan`]s over a couple of months of business time, every step decided by the
//! payment and dispute aggregates (the same commands the API runs, with the simulated time
//! as "now") and written through the store's append path. Steps are taken in time order,
//! many streams per append, so one payment's events spread over many transactions of the
//! feed, as in production.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ledger::dispute::{
    self, AuthorRole, Dispute, DisputeEvent, DisputeReason, EvidenceType, OpenDispute, PartyRole,
    PostMessage, Resolve, SubmitEvidence,
};
use ledger::event::{Actor, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use ledger::payment::{
    self, Cancel, CreatePayment, Deposit, Fee, FeeKind, Party, Payment, PaymentEvent, Payout,
    Refund, Release, Settlement,
};
use ledger::store::EventStore;
use ledger::Reference;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use super::plan::{Plan, Rng, Step};

/// What one writer appends and when.
#[derive(Debug, Clone)]
pub struct MarketSettings {
    /// This writer's number, `0..writers`.
    pub writer: u64,
    /// Writers in all (each owns the payments whose slot is its number modulo this).
    pub writers: u64,
    /// Events this writer appends (it stops at the first append that reaches it).
    pub events: u64,
    /// Business time of the first creation slot.
    pub start: DateTime<Utc>,
    /// Business time between two creation slots (all writers together).
    pub slot: Duration,
    /// Business time never passed: steps due later are left undone.
    pub now: DateTime<Utc>,
    /// Events per append.
    pub batch_events: usize,
}

/// What a writer did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    /// Events appended.
    pub events: u64,
    /// Payments created.
    pub payments: u64,
    /// Disputes opened.
    pub disputes: u64,
}

/// One payment on its way through its plan.
struct Sim {
    id: Uuid,
    plan: Plan,
    next: usize,
    created: DateTime<Utc>,
    payment: Payment,
    dispute: Option<(Uuid, Dispute)>,
    buyer: Reference,
    seller: Reference,
}

/// The appends of one statement, one per stream, in order.
#[derive(Default)]
struct Batch {
    appends: Vec<StreamAppend>,
    index: HashMap<Uuid, usize>,
    events: usize,
}

impl Batch {
    /// Adds events to `stream`, which was at `version` before them.
    fn add(&mut self, stream: Uuid, stream_type: &str, version: i64, events: Vec<NewEvent>) {
        self.events += events.len();
        if let Some(&i) = self.index.get(&stream) {
            self.appends[i].events.extend(events);
            return;
        }
        self.index.insert(stream, self.appends.len());
        self.appends.push(StreamAppend {
            stream_id: stream,
            stream_type: stream_type.into(),
            expected: if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            },
            events,
        });
    }
}

fn meta(name: &str, role: &str) -> Metadata {
    Metadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor {
            name: name.into(),
            role: role.into(),
        },
        source: "bench".into(),
        legacy: None,
    }
}

fn cents(c: i64) -> Decimal {
    Decimal::new(c, 2)
}

/// `rate` of `gross`, to the cent, at least one cent.
fn fee(kind: FeeKind, gross: Decimal, rate_per_mille: i64) -> Fee {
    let amount = (gross * Decimal::new(rate_per_mille, 3))
        .round_dp(2)
        .max(cents(1));
    Fee { kind, amount }
}

/// Runs one writer's market until it appended `settings.events` events.
///
/// # Errors
/// An aggregate refused a step (a bug of the plan), or an append failed.
pub async fn run_market(
    store: EventStore,
    settings: MarketSettings,
    seed: u64,
    appended: Arc<AtomicU64>,
) -> anyhow::Result<Written> {
    let mut rng = Rng::new(seed);
    let mut live: HashMap<u64, Sim> = HashMap::new();
    let mut due: BinaryHeap<Reverse<(DateTime<Utc>, u64)>> = BinaryHeap::new();
    let mut batch = Batch::default();
    let mut done = Written::default();
    let mut slot = 0_u64;
    while done.events < settings.events {
        let index = slot * settings.writers + settings.writer;
        let creation = (settings.start + settings.slot * i32::try_from(index).unwrap_or(i32::MAX))
            .min(settings.now);
        let take_creation = due.peek().is_none_or(|Reverse((t, _))| creation <= *t);
        let (at, key) = if take_creation {
            slot += 1;
            let sim = new_sim(&mut rng, creation);
            live.insert(index, sim);
            done.payments += 1;
            (creation, index)
        } else {
            let Some(Reverse(next)) = due.pop() else {
                continue;
            };
            next
        };
        let Some(sim) = live.get_mut(&key) else {
            continue;
        };
        let step = sim.plan.steps[sim.next].1.clone();
        if matches!(step, Step::OpenDispute(_)) {
            done.disputes += 1;
        }
        take_step(&mut rng, sim, &step, at, &mut batch)?;
        sim.next += 1;
        match sim.plan.steps.get(sim.next) {
            Some((offset, _)) if sim.created + *offset <= settings.now => {
                due.push(Reverse((sim.created + *offset, key)));
            }
            _ => {
                live.remove(&key);
            }
        }
        if batch.events >= settings.batch_events {
            done.events += flush(&store, &mut batch).await?;
            appended.store(done.events, Ordering::Relaxed);
        }
    }
    done.events += flush(&store, &mut batch).await?;
    appended.store(done.events, Ordering::Relaxed);
    Ok(done)
}

async fn flush(store: &EventStore, batch: &mut Batch) -> anyhow::Result<u64> {
    if batch.appends.is_empty() {
        return Ok(0);
    }
    let taken = std::mem::take(batch);
    store.append(&taken.appends).await?;
    Ok(taken.events as u64)
}

fn new_sim(rng: &mut Rng, created: DateTime<Utc>) -> Sim {
    let plan = Plan::draw(rng);
    let seller = match rng.below(5000) {
        n @ 0..=499 => Reference::external(format!("shop-{n}")),
        n => Reference::entity(Uuid::from_u64_pair(0x005e_11e7, n)),
    };
    let buyer = Reference::entity(Uuid::from_u64_pair(0xb0b, rng.below(100_000)));
    Sim {
        id: Uuid::new_v4(),
        plan,
        next: 0,
        created,
        payment: Payment::default(),
        dispute: None,
        buyer,
        seller,
    }
}

/// Decides `step` with the aggregates at business time `at` and adds its events.
fn take_step(
    rng: &mut Rng,
    sim: &mut Sim,
    step: &Step,
    at: DateTime<Utc>,
    batch: &mut Batch,
) -> anyhow::Result<()> {
    let coordinator = meta("checkout-coordinator", "coordinator");
    let p = &sim.payment;
    let decided: Vec<PaymentEvent> = match step {
        Step::Create => p.create(CreatePayment {
            payment_id: sim.id,
            buyer: sim.buyer.clone(),
            seller: sim.seller.clone(),
            purchase_request: Reference::entity(Uuid::new_v4()),
            seller_offer: rng.chance(50).then(|| Reference::entity(Uuid::new_v4())),
            amount: cents(sim.plan.cents),
            asset: sim.plan.asset,
            provider: sim.plan.provider.into(),
            metadata: Some(json!({"channel": "web", "order": rng.below(1_000_000)})),
        })?,
        Step::Deposit(c) => p.deposit(
            &Deposit {
                amount: cents(*c),
                reference: format!("dep-{}", Uuid::new_v4().simple()),
                occurred_at: at,
                allow_excess: false,
            },
            at,
        )?,
        Step::Release { cents: c, aml } => {
            let gross = c.map_or(p.releasable(), cents);
            let mut fees = vec![fee(FeeKind::Fee, gross, 25)];
            if *aml {
                fees.push(fee(FeeKind::AmlFee, gross, 5));
            }
            p.release(&Release {
                amount: c.map(cents),
                fees,
            })?
        }
        Step::Refund => p.refund(&Refund::default())?,
        Step::Payout(party) => {
            let share = match party {
                Party::Seller => p.seller_share,
                Party::Buyer => p.buyer_share,
            };
            if share <= Decimal::ZERO {
                return Ok(());
            }
            p.payout(&Payout {
                party: *party,
                amount: share,
                reference: format!("po-{}", Uuid::new_v4().simple()),
            })?
        }
        Step::Cancel => p.cancel(&Cancel {
            reason: "the buyer changed their mind".into(),
        })?,
        _ => return dispute_step(rng, sim, step, at, batch),
    };
    pay(sim, &decided, &coordinator, at, batch);
    Ok(())
}

/// Appends decided payment events to the payment's stream and folds them.
fn pay(
    sim: &mut Sim,
    decided: &[PaymentEvent],
    meta: &Metadata,
    at: DateTime<Utc>,
    batch: &mut Batch,
) {
    let events = sim.payment.new_events(decided, meta, at);
    let before = sim.payment.version;
    for e in decided {
        sim.payment.apply(e, at);
    }
    batch.add(sim.id, payment::STREAM_TYPE, before, events);
}

/// Appends decided dispute events to the dispute's stream and folds them.
fn argue(
    id: Uuid,
    state: &mut Dispute,
    decided: &[DisputeEvent],
    meta: &Metadata,
    at: DateTime<Utc>,
    batch: &mut Batch,
) {
    let events = dispute::new_events(decided, meta, at);
    let before = state.version;
    for e in decided {
        state.apply(e, at);
    }
    batch.add(id, dispute::STREAM_TYPE, before, events);
}

fn dispute_step(
    rng: &mut Rng,
    sim: &mut Sim,
    step: &Step,
    at: DateTime<Utc>,
    batch: &mut Batch,
) -> anyhow::Result<()> {
    let party = meta("checkout-coordinator", "coordinator");
    let admin = meta(&format!("ops-admin-{}", rng.below(12)), "admin");
    if let Step::OpenDispute(priority) = step {
        let id = Uuid::new_v4();
        let mut state = Dispute::default();
        let opened = state.open(OpenDispute {
            dispute_id: id,
            payment_id: sim.id,
            opened_by: sim.buyer.clone(),
            role: PartyRole::Buyer,
            reason: match rng.below(5) {
                0 => DisputeReason::ItemNotReceived,
                1 => DisputeReason::NotAsDescribed,
                2 => DisputeReason::PaymentIssue,
                3 => DisputeReason::Fraud,
                _ => DisputeReason::Other,
            },
            description: "the parcel never arrived and the tracking stopped".into(),
            priority: *priority,
        })?;
        let frozen = sim.payment.freeze(id)?;
        argue(id, &mut state, &opened, &party, at, batch);
        pay(sim, &frozen, &party, at, batch);
        sim.dispute = Some((id, state));
        return Ok(());
    }
    let Some((id, mut state)) = sim.dispute.take() else {
        anyhow::bail!("a dispute step before the dispute opened");
    };
    match step {
        Step::Evidence => {
            let d = state.submit_evidence(SubmitEvidence {
                evidence_id: Uuid::new_v4(),
                submitted_by: sim.buyer.clone(),
                evidence_type: match rng.below(4) {
                    0 => EvidenceType::Image,
                    1 => EvidenceType::Document,
                    2 => EvidenceType::Link,
                    _ => EvidenceType::Text,
                },
                url: Some(format!("https://files.example/{}", Uuid::new_v4().simple())),
                description: Some("what the buyer received".into()),
            })?;
            argue(id, &mut state, &d, &party, at, batch);
        }
        Step::Message => {
            let d = state.post_message(PostMessage {
                message_id: Uuid::new_v4(),
                author: sim.seller.clone(),
                author_role: AuthorRole::Seller,
                body: "we shipped on time; here is the carrier's receipt".into(),
                attachments: vec!["receipt.pdf".into()],
            })?;
            argue(id, &mut state, &d, &party, at, batch);
        }
        Step::Assign => {
            let who = Reference::entity(Uuid::from_u64_pair(0xad, rng.below(12)));
            let d = state.assign(who)?;
            argue(id, &mut state, &d, &admin, at, batch);
        }
        Step::EndDispute(status) => {
            let d = state.change_status(*status, Some("closed by support".into()))?;
            let unfrozen = sim.payment.unfreeze(id, *status)?;
            argue(id, &mut state, &d, &admin, at, batch);
            pay(sim, &unfrozen, &admin, at, batch);
        }
        Step::Resolve(outcome) => {
            let held = sim.payment.held;
            let (seller_amount, buyer_amount, fees) = match outcome {
                dispute::Outcome::ReleaseToSeller => {
                    (None, None, vec![fee(FeeKind::Fee, held, 25)])
                }
                dispute::Outcome::Split => {
                    let s = (held / Decimal::TWO).round_dp(2);
                    (Some(s), Some(held - s), vec![fee(FeeKind::Fee, s, 25)])
                }
                _ => (None, None, Vec::new()),
            };
            let d = state.resolve(Resolve {
                outcome: *outcome,
                seller_amount,
                buyer_amount,
                fees,
                note: Some("decided on the evidence".into()),
            })?;
            let Some(DisputeEvent::DisputeResolved(resolved)) = d.first() else {
                anyhow::bail!("a resolution decided no DisputeResolved");
            };
            let money = sim
                .payment
                .settle_dispute(&Settlement::from_resolution(id, resolved))?;
            argue(id, &mut state, &d, &admin, at, batch);
            pay(sim, &money, &admin, at, batch);
        }
        _ => anyhow::bail!("not a dispute step: {step:?}"),
    }
    sim.dispute = Some((id, state));
    Ok(())
}
