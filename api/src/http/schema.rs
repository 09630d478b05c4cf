//! Schema-only mirrors of the domain's enums and references, for the OpenAPI document:
//! the domain (`ledger`) knows nothing of OpenAPI, so its types carry no schema, and a
//! bare `string` or `object` in the document hid what the server accepts. Each mirrors
//! the domain type's serde form exactly; a test compares the document with the server.

#![allow(dead_code)] // never built: they only describe

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// An asset the ledger holds (`ledger::Asset`).
#[derive(Serialize, ToSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum AssetCode {
    /// US dollar, 2 decimals.
    USD,
    /// Euro, 2 decimals.
    EUR,
    /// Tether, 6 decimals.
    USDT,
    /// USD Coin, 6 decimals.
    USDC,
    /// Bitcoin, 8 decimals.
    BTC,
    /// Ether, 18 decimals.
    ETH,
}

/// A party or a legacy object: one of ours by UUID, or an outside text
/// (`ledger::account::Reference`; the text is 1 to 256 bytes: it names an account).
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PartyReference {
    /// One of ours.
    Entity {
        /// Its id.
        id: Uuid,
    },
    /// An outside reference, kept verbatim.
    External {
        /// The text (1 to 256 bytes).
        #[serde(rename = "ref")]
        #[schema(min_length = 1, max_length = 256)]
        reference: String,
    },
}

/// A fee's kind (`ledger::payment::FeeKind`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeeKindName {
    /// To `platform:fees`.
    Fee,
    /// To `platform:aml_fees`.
    AmlFee,
}

/// Whose share a payout pays (`ledger::payment::Party`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartyName {
    /// The seller.
    Seller,
    /// The buyer.
    Buyer,
}

/// Who opens a dispute (`ledger::dispute::PartyRole`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpenerRole {
    /// The buyer.
    Buyer,
    /// The seller.
    Seller,
}

/// Why a dispute was opened (`ledger::dispute::DisputeReason`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisputeReasonName {
    /// Not received.
    ItemNotReceived,
    /// Not as described.
    NotAsDescribed,
    /// A payment problem.
    PaymentIssue,
    /// Fraud.
    Fraud,
    /// Anything else.
    Other,
}

/// Evidence's type (`ledger::dispute::EvidenceType`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceTypeName {
    /// An image.
    Image,
    /// A document.
    Document,
    /// A link.
    Link,
    /// Text.
    Text,
}

/// A message author's role (`ledger::dispute::AuthorRole`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthorRoleName {
    /// The buyer.
    Buyer,
    /// The seller.
    Seller,
    /// An administrator.
    Admin,
    /// The system.
    System,
}

/// A dispute's priority (`ledger::dispute::Priority`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PriorityName {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

/// A dispute's status (`ledger::dispute::DisputeStatus`; `resolved` only by a resolution).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatusName {
    /// Open.
    Open,
    /// Under review.
    UnderReview,
    /// Waiting for the buyer.
    AwaitingBuyer,
    /// Waiting for the seller.
    AwaitingSeller,
    /// Resolved (by a resolution only).
    Resolved,
    /// Rejected.
    Rejected,
    /// Withdrawn.
    Withdrawn,
    /// Closed.
    Closed,
}

/// A resolution's outcome (`ledger::dispute::Outcome`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeName {
    /// All that is held to the seller (fees as for a release).
    ReleaseToSeller,
    /// All that is held to the buyer.
    RefundToBuyer,
    /// `seller_amount` and `buyer_amount`, which must add up to what is held.
    Split,
    /// Nothing moves; the escrow is unfrozen.
    NoAction,
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::Value;
    use utoipa::PartialSchema;

    use super::*;

    /// The values a mirror's schema lists, each read by the domain type it mirrors: a
    /// mirror that drifts from the domain (a value renamed or added there) fails here.
    fn listed_values_read_as<M: PartialSchema, D: DeserializeOwned>(at_least: usize) {
        let schema = serde_json::to_value(M::schema()).unwrap_or(Value::Null);
        let values = schema["enum"].as_array().cloned().unwrap_or_default();
        assert!(values.len() >= at_least, "{schema}");
        for v in values {
            assert!(
                serde_json::from_value::<D>(v.clone()).is_ok(),
                "{v} is not a value of {}",
                std::any::type_name::<D>()
            );
        }
    }

    #[test]
    fn every_mirror_lists_only_values_the_domain_reads() {
        listed_values_read_as::<AssetCode, ledger::Asset>(6);
        listed_values_read_as::<FeeKindName, ledger::payment::FeeKind>(2);
        listed_values_read_as::<PartyName, ledger::payment::Party>(2);
        listed_values_read_as::<OpenerRole, ledger::dispute::PartyRole>(2);
        listed_values_read_as::<DisputeReasonName, ledger::dispute::DisputeReason>(5);
        listed_values_read_as::<EvidenceTypeName, ledger::dispute::EvidenceType>(4);
        listed_values_read_as::<AuthorRoleName, ledger::dispute::AuthorRole>(4);
        listed_values_read_as::<PriorityName, ledger::dispute::Priority>(4);
        listed_values_read_as::<DisputeStatusName, ledger::dispute::DisputeStatus>(8);
        listed_values_read_as::<OutcomeName, ledger::dispute::Outcome>(4);
    }

    #[test]
    fn a_party_reference_in_the_mirrors_form_reads_as_a_reference() {
        for v in [
            serde_json::json!({"kind": "entity", "id": Uuid::nil()}),
            serde_json::json!({"kind": "external", "ref": "shop-7"}),
        ] {
            assert!(
                serde_json::from_value::<ledger::Reference>(v.clone()).is_ok(),
                "{v}"
            );
        }
    }
}
