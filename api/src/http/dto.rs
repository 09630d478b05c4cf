//! Request bodies as the contract writes them, and their parsing into typed commands:
//! amounts are strings parsed exactly, ids UUIDs, unknown fields refused.

use chrono::{DateTime, Utc};
use ledger::account::Reference;
use ledger::money::{parse_decimal_exact, Asset};
use ledger::payment::{Fee, FeeKind};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::problem::ApiError;

/// Parses a path id.
///
/// # Errors
/// [`ApiError::Validation`] for a malformed UUID.
pub fn path_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::validation(format!("{text:?} is not a UUID")))
}

/// Parses a strictly positive plain decimal (the asset's scale is checked where the asset
/// is known).
///
/// # Errors
/// [`ApiError::Validation`] naming the field.
pub fn amount(field: &str, text: &str) -> Result<Decimal, ApiError> {
    let value =
        parse_decimal_exact(text).map_err(|e| ApiError::validation(format!("{field}: {e}")))?;
    if value <= Decimal::ZERO {
        return Err(ApiError::validation(format!(
            "{field}: {text:?} is not a positive amount"
        )));
    }
    Ok(value)
}

/// Parses an amount of a known asset, at its scale.
///
/// # Errors
/// [`ApiError::Validation`].
pub fn amount_of(field: &str, asset: Asset, text: &str) -> Result<Decimal, ApiError> {
    ledger::money::check_scale(asset, amount(field, text)?)
        .map_err(|e| ApiError::validation(format!("{field}: {e}")))
}

/// Parses an asset code.
///
/// # Errors
/// [`ApiError::Validation`].
pub fn asset(text: &str) -> Result<Asset, ApiError> {
    text.parse::<Asset>()
        .map_err(|e| ApiError::validation(format!("asset: {e}")))
}

/// A fee as posted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeeBody {
    /// `fee` or `aml_fee`.
    #[schema(value_type = super::schema::FeeKindName, example = "fee")]
    pub kind: FeeKind,
    /// Plain decimal text.
    #[schema(example = "2.50", pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
}

/// Parses fees.
///
/// # Errors
/// [`ApiError::Validation`].
pub fn fees(list: &[FeeBody]) -> Result<Vec<Fee>, ApiError> {
    list.iter()
        .map(|f| {
            Ok(Fee {
                kind: f.kind,
                amount: amount("fees[].amount", &f.amount)?,
            })
        })
        .collect()
}

/// A party reference of a request: its external text at most
/// [`ledger::account::MAX_KEY_LEN`] bytes, since it names an account and index keys.
fn bounded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Reference, D::Error> {
    let r = Reference::deserialize(d)?;
    if r.is_bounded() {
        Ok(r)
    } else {
        Err(serde::de::Error::custom(format!(
            "an external reference's \"ref\" may be at most {} bytes long",
            ledger::account::MAX_KEY_LEN
        )))
    }
}

/// [`bounded`], for an optional reference.
fn bounded_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Reference>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "bounded")] Reference);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// Checks a required text field is not blank.
///
/// # Errors
/// [`ApiError::Validation`].
pub fn required_text(field: &str, text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::validation(format!("{field} must not be empty")));
    }
    Ok(())
}

/// `POST /v1/payments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentBody {
    /// The payment's id; generated when absent.
    pub payment_id: Option<Uuid>,
    /// Who pays: `{"kind":"entity","id":...}` or `{"kind":"external","ref":...}`.
    #[schema(value_type = super::schema::PartyReference)]
    #[serde(deserialize_with = "bounded")]
    pub buyer: Reference,
    /// Who is paid.
    #[schema(value_type = super::schema::PartyReference)]
    #[serde(deserialize_with = "bounded")]
    pub seller: Reference,
    /// The purchase request paid for.
    #[schema(value_type = super::schema::PartyReference)]
    #[serde(deserialize_with = "bounded")]
    pub purchase_request: Reference,
    /// The seller's offer, if any.
    #[schema(value_type = Option<super::schema::PartyReference>)]
    #[serde(default, deserialize_with = "bounded_option")]
    pub seller_offer: Option<Reference>,
    /// What the buyer must deposit.
    #[schema(example = "125.50", pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    /// Asset code.
    #[schema(value_type = super::schema::AssetCode, example = "USD")]
    pub asset: String,
    /// Payment provider, `[a-z0-9_]+`, at most 256 bytes.
    #[schema(example = "stripe", pattern = r"^[a-z0-9_]+$", max_length = 256)]
    pub provider: String,
    /// Free-form data carried along.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// `POST /v1/payments/{id}/deposits`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositBody {
    /// How much came in.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    /// The provider's reference (deposited once per provider), 1 to 256 bytes.
    #[schema(min_length = 1, max_length = 256)]
    pub reference: String,
    /// When it came in: not in the future, at most 72 h ago; default now.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Accept a deposit beyond the amount (the excess can only be refunded).
    #[serde(default)]
    pub allow_excess: bool,
}

/// `POST /v1/payments/{id}/releases` and `/refunds`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    /// What leaves escrow; default all that is held.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: Option<String>,
    /// Fees out of it.
    #[serde(default)]
    pub fees: Vec<FeeBody>,
}

/// `POST /v1/payments/{id}/payouts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutBody {
    /// `seller` or `buyer`.
    #[schema(value_type = super::schema::PartyName, example = "seller")]
    pub party: ledger::payment::Party,
    /// How much.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    /// The provider's payout reference, 1 to 256 bytes.
    #[schema(min_length = 1, max_length = 256)]
    pub reference: String,
}

/// `POST /v1/payments/{id}/cancellation`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why.
    pub reason: String,
}

/// `POST /v1/disputes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenDisputeBody {
    /// The disputed payment.
    pub payment_id: Uuid,
    /// Who opens it.
    #[schema(value_type = super::schema::PartyReference)]
    #[serde(deserialize_with = "bounded")]
    pub opened_by: Reference,
    /// `buyer` or `seller`.
    #[schema(value_type = super::schema::OpenerRole)]
    pub role: ledger::dispute::PartyRole,
    /// A legacy reason code.
    #[schema(value_type = super::schema::DisputeReasonName, example = "item_not_received")]
    pub reason: ledger::dispute::DisputeReason,
    /// What happened.
    pub description: String,
}

/// `POST /v1/disputes/{id}/evidence`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceBody {
    /// Who submits it.
    #[schema(value_type = super::schema::PartyReference)]
    #[serde(deserialize_with = "bounded")]
    pub submitted_by: Reference,
    /// image, document, link or text.
    #[serde(rename = "type")]
    #[schema(value_type = super::schema::EvidenceTypeName)]
    pub evidence_type: ledger::dispute::EvidenceType,
    /// Where it is.
    pub url: Option<String>,
    /// What it shows.
    pub description: Option<String>,
}

/// `POST /v1/disputes/{id}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// Who writes.
    #[schema(value_type = super::schema::PartyReference)]
    #[serde(deserialize_with = "bounded")]
    pub author: Reference,
    /// buyer, seller, admin or system.
    #[schema(value_type = super::schema::AuthorRoleName)]
    pub author_role: ledger::dispute::AuthorRole,
    /// The text.
    pub body: String,
    /// Attachment URLs.
    #[serde(default)]
    pub attachments: Vec<String>,
}

/// `POST /v1/disputes/{id}/assignment`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// The admin.
    #[schema(value_type = super::schema::PartyReference)]
    #[serde(deserialize_with = "bounded")]
    pub admin: Reference,
}

/// `POST /v1/disputes/{id}/priority`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    /// low, medium, high or urgent.
    #[schema(value_type = super::schema::PriorityName)]
    pub priority: ledger::dispute::Priority,
}

/// `POST /v1/disputes/{id}/status`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    /// Any status but `resolved`.
    #[schema(value_type = super::schema::DisputeStatusName)]
    pub status: ledger::dispute::DisputeStatus,
    /// Why.
    pub note: Option<String>,
}

/// `POST /v1/disputes/{id}/resolution`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolutionBody {
    /// release_to_seller, refund_to_buyer, split or no_action.
    #[schema(value_type = super::schema::OutcomeName)]
    pub outcome: ledger::dispute::Outcome,
    /// For a split: the seller's part (fees come out of it).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub seller_amount: Option<String>,
    /// For a split: the buyer's part.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub buyer_amount: Option<String>,
    /// Fees.
    #[serde(default)]
    pub fees: Vec<FeeBody>,
    /// Why.
    pub note: Option<String>,
}

/// `POST /v1/adjustments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    /// Debited account name.
    #[schema(example = "platform:suspense")]
    pub from: String,
    /// Credited account name.
    pub to: String,
    /// How much.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    /// Asset code.
    #[schema(value_type = super::schema::AssetCode)]
    pub asset: String,
    /// Why.
    pub reason: String,
    /// The payment whose escrow, seller or buyer account is touched.
    pub payment_id: Option<Uuid>,
}
