//! What the simulated marketplace of `bench rebuild` does with each payment: a plan of
//! steps, decided once at creation with fixed odds, each a command a coordinator or an
//! admin would send. Pure: no I/O; the generator turns each step into events through the
//! aggregates.

use chrono::Duration;
use ledger::dispute::{DisputeStatus, Outcome, Priority};
use ledger::payment::Party;
use ledger::Asset;

/// A small deterministic generator (splitmix64): the same seed makes the same market, and
/// the workspace needs no `rand` for a benchmark.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration between `lo` and `hi` minutes.
    pub fn minutes(&mut self, lo: i64, hi: i64) -> Duration {
        let span = u64::try_from((hi - lo).max(1)).unwrap_or(1);
        Duration::minutes(lo + i64::try_from(self.below(span)).unwrap_or(0))
    }
}

/// One command of a payment's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `PaymentCreated`.
    Create,
    /// A deposit of this many cents.
    Deposit(i64),
    /// A release of this many cents (`None`: all that is held), with a 2.5 % fee and,
    /// when `aml`, a 0.5 % AML fee.
    Release {
        /// Cents, or all.
        cents: Option<i64>,
        /// Whether an AML fee is taken too.
        aml: bool,
    },
    /// A refund of all that is held, without fees.
    Refund,
    /// A payout of the party's whole share.
    Payout(Party),
    /// A cancellation (nothing held).
    Cancel,
    /// A dispute opens (`DisputeOpened` and the payment's `EscrowFrozen`).
    OpenDispute(Priority),
    /// Evidence is submitted.
    Evidence,
    /// A party posts a message.
    Message,
    /// An admin is assigned.
    Assign,
    /// The dispute ends without a resolution (`StatusChanged` and `EscrowUnfrozen`).
    EndDispute(DisputeStatus),
    /// The dispute is resolved (`DisputeResolved` and the payment's `DisputeSettled`).
    Resolve(Outcome),
}

impl Step {
    /// How many events the step appends.
    pub fn events(&self) -> usize {
        match self {
            Step::OpenDispute(_) | Step::EndDispute(_) | Step::Resolve(_) => 2,
            _ => 1,
        }
    }
}

/// A payment's terms and its steps, each at an offset from its creation, in order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The asset.
    pub asset: Asset,
    /// The provider.
    pub provider: &'static str,
    /// The amount, in cents.
    pub cents: i64,
    /// The steps, offsets increasing.
    pub steps: Vec<(Duration, Step)>,
}

impl Plan {
    /// Decides a payment's life: most are funded and released with fees and paid out;
    /// some are refunded, partly released, left funded, never funded or cancelled; about
    /// one in sixteen is disputed (with evidence, a message, often an admin), and most
    /// disputes are resolved, some end without a resolution and some stay open.
    pub fn draw(rng: &mut Rng) -> Plan {
        let (asset, provider) = match rng.below(20) {
            0..=9 => (Asset::Usd, if rng.chance(60) { "stripe" } else { "adyen" }),
            10..=14 => (Asset::Eur, "adyen"),
            15..=16 => (Asset::Usd, "paypal"),
            _ => (Asset::Usdt, "tron"),
        };
        let cents = 500 + i64::try_from(rng.below(199_500)).unwrap_or(0);
        let mut steps = vec![(Duration::zero(), Step::Create)];
        let mut at = rng.minutes(5, 360);
        let roll = rng.below(100);
        if roll < 3 {
            // Never funded; a third of those are cancelled.
            if roll == 0 {
                steps.push((at + Duration::days(2), Step::Cancel));
            }
            return Plan::new(asset, provider, cents, steps);
        }
        if rng.chance(10) {
            let first = cents * 6 / 10;
            steps.push((at, Step::Deposit(first)));
            at += rng.minutes(30, 600);
            steps.push((at, Step::Deposit(cents - first)));
        } else {
            steps.push((at, Step::Deposit(cents)));
        }
        at += rng.minutes(24 * 60, 7 * 24 * 60);
        match roll {
            3..=6 => {} // stays funded
            7..=14 => {
                steps.push((at, Step::Refund));
                if rng.chance(50) {
                    steps.push((at + rng.minutes(60, 2880), Step::Payout(Party::Buyer)));
                }
            }
            15..=16 => {
                let aml = rng.chance(20);
                steps.push((
                    at,
                    Step::Release {
                        cents: Some(cents / 2),
                        aml,
                    },
                ));
                at += rng.minutes(60, 4 * 24 * 60);
                steps.push((at, Step::Release { cents: None, aml }));
            }
            17..=22 => Plan::dispute(rng, at, &mut steps),
            _ => {
                let aml = rng.chance(20);
                steps.push((at, Step::Release { cents: None, aml }));
                if rng.chance(75) {
                    steps.push((at + rng.minutes(60, 2880), Step::Payout(Party::Seller)));
                }
            }
        }
        Plan::new(asset, provider, cents, steps)
    }

    fn new(asset: Asset, provider: &'static str, cents: i64, steps: Vec<(Duration, Step)>) -> Plan {
        Plan {
            asset,
            provider,
            cents,
            steps,
        }
    }

    fn dispute(rng: &mut Rng, mut at: Duration, steps: &mut Vec<(Duration, Step)>) {
        let priority = match rng.below(10) {
            0..=1 => Priority::Low,
            2..=6 => Priority::Medium,
            7..=8 => Priority::High,
            _ => Priority::Urgent,
        };
        steps.push((at, Step::OpenDispute(priority)));
        for _ in 0..=rng.below(3) {
            at += rng.minutes(10, 2880);
            steps.push((at, Step::Evidence));
        }
        at += rng.minutes(10, 1440);
        steps.push((at, Step::Message));
        if rng.chance(70) {
            at += rng.minutes(60, 2880);
            steps.push((at, Step::Assign));
        }
        at += rng.minutes(24 * 60, 10 * 24 * 60);
        match rng.below(100) {
            0..=14 => {} // still open: the admin queue
            15..=24 => {
                let how = if rng.chance(50) {
                    DisputeStatus::Rejected
                } else {
                    DisputeStatus::Withdrawn
                };
                steps.push((at, Step::EndDispute(how)));
                steps.push((
                    at + rng.minutes(60, 2880),
                    Step::Release {
                        cents: None,
                        aml: false,
                    },
                ));
            }
            r => {
                let outcome = match r {
                    25..=54 => Outcome::ReleaseToSeller,
                    55..=84 => Outcome::RefundToBuyer,
                    85..=96 => Outcome::Split,
                    _ => Outcome::NoAction,
                };
                steps.push((at, Step::Resolve(outcome)));
            }
        }
    }

    /// Events the whole plan appends.
    pub fn events(&self) -> usize {
        self.steps.iter().map(|(_, s)| s.events()).sum()
    }
}

/// The average number of events of a plan, from a sample (to space creations so that the
/// wanted number of events spans the wanted time).
#[allow(clippy::cast_precision_loss)]
pub fn average_events(seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let n = 20_000;
    let total: usize = (0..n).map(|_| Plan::draw(&mut rng).events()).sum();
    total as f64 / f64::from(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_ordered_and_average_a_few_events() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            let p = Plan::draw(&mut rng);
            assert!(p.steps.windows(2).all(|w| w[0].0 <= w[1].0));
            assert_eq!(p.steps[0].1, Step::Create);
        }
        let avg = average_events(7);
        assert!((3.0..8.0).contains(&avg), "{avg}");
    }
}
