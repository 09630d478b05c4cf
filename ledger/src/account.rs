//! Parties and accounts: who money belongs to, named as `contract.md` names them
//! (`escrow:<payment>`, `seller:<ref>`, `platform:fees`, ...). Names are stored, so their
//! text form is a contract.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A reference to a party or a legacy object: one of ours (a UUID) or an outside text.
/// An external reference's text is never empty: accounts are named after it
/// (`seller:ext:<text>`), and `ext:` alone names no one, so reading one is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields,
    try_from = "ReferenceFields"
)]
pub enum Reference {
    /// An entity with a UUID (a user, a purchase request, ...).
    Entity {
        /// The entity's id.
        id: Uuid,
    },
    /// An outside reference kept verbatim (`"tmpl_8f2a"`, `"webhook:coinbase"`).
    External {
        /// The reference text; never empty.
        #[serde(rename = "ref")]
        reference: String,
    },
}

/// A [`Reference`] as read, before its text is checked.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ReferenceFields {
    Entity {
        id: Uuid,
    },
    External {
        #[serde(rename = "ref")]
        reference: String,
    },
}

/// The longest text, in bytes, that new input may put into an external reference, a
/// provider name or a provider's deposit or payout reference. Such texts name accounts
/// and index keys (`seller:ext:<text>`, `external:<provider>`, the once-only deposit
/// references), and PostgreSQL refuses an index entry over about 2.7 kB: a longer one was
/// accepted by one command and broke the next (a release whose posting could not be
/// indexed) or a projector. Checked where input enters (the API, the importer), never
/// when stored events and account names are read back: what was stored stays readable.
pub const MAX_KEY_LEN: usize = 256;

/// Whether `text` may name something stored under a key: not empty, at most
/// [`MAX_KEY_LEN`] bytes.
pub fn is_valid_key_text(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_KEY_LEN
}

/// An external reference with empty text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an external reference's \"ref\" must not be empty")]
pub struct EmptyReference;

impl TryFrom<ReferenceFields> for Reference {
    type Error = EmptyReference;

    fn try_from(fields: ReferenceFields) -> Result<Self, Self::Error> {
        match fields {
            ReferenceFields::Entity { id } => Ok(Reference::Entity { id }),
            ReferenceFields::External { reference } if reference.is_empty() => Err(EmptyReference),
            ReferenceFields::External { reference } => Ok(Reference::External { reference }),
        }
    }
}

impl Reference {
    /// An entity reference.
    pub fn entity(id: Uuid) -> Self {
        Reference::Entity { id }
    }

    /// An external reference.
    pub fn external(reference: impl Into<String>) -> Self {
        Reference::External {
            reference: reference.into(),
        }
    }

    /// Whether new input may use this reference: an external text of at most
    /// [`MAX_KEY_LEN`] bytes (see there).
    pub fn is_bounded(&self) -> bool {
        match self {
            Reference::Entity { .. } => true,
            Reference::External { reference } => reference.len() <= MAX_KEY_LEN,
        }
    }

    /// The text used inside account names: the UUID, or `ext:<text>`.
    pub fn account_key(&self) -> String {
        match self {
            Reference::Entity { id } => id.to_string(),
            Reference::External { reference } => format!("ext:{reference}"),
        }
    }

    fn from_account_key(key: &str) -> Option<Self> {
        if let Some(text) = key.strip_prefix("ext:") {
            return (!text.is_empty()).then(|| Reference::external(text));
        }
        Uuid::parse_str(key).ok().map(Reference::entity)
    }
}

/// A ledger account. Balances are never stored as truth: they are sums of postings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// Money outside the ledger at a payment provider; negative after deposits.
    External(String),
    /// What a payment holds in escrow.
    Escrow(Uuid),
    /// What the ledger owes a seller.
    Seller(Reference),
    /// What the ledger owes a buyer.
    Buyer(Reference),
    /// Platform fee revenue.
    PlatformFees,
    /// Anti-money-laundering fee revenue.
    PlatformAmlFees,
    /// The counter-account of manual corrections.
    PlatformAdjustments,
    /// Money the importer could not place (orphan ledger entries).
    PlatformSuspense,
}

/// An account name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an account name (external:<provider>, escrow:<uuid>, seller:<ref>, buyer:<ref>, platform:fees|aml_fees|adjustments|suspense)")]
pub struct InvalidAccount(pub String);

/// Checks a provider name: free text of `[a-z0-9_]+` (new input is also bounded by
/// [`MAX_KEY_LEN`]).
pub fn is_valid_provider(provider: &str) -> bool {
    !provider.is_empty()
        && provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Account {
    /// Whether new input may name this account: its provider or external reference is at
    /// most [`MAX_KEY_LEN`] bytes.
    pub fn is_bounded(&self) -> bool {
        match self {
            Account::External(p) => p.len() <= MAX_KEY_LEN,
            Account::Seller(r) | Account::Buyer(r) => r.is_bounded(),
            _ => true,
        }
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::External(p) => write!(f, "external:{p}"),
            Account::Escrow(id) => write!(f, "escrow:{id}"),
            Account::Seller(r) => write!(f, "seller:{}", r.account_key()),
            Account::Buyer(r) => write!(f, "buyer:{}", r.account_key()),
            Account::PlatformFees => f.write_str("platform:fees"),
            Account::PlatformAmlFees => f.write_str("platform:aml_fees"),
            Account::PlatformAdjustments => f.write_str("platform:adjustments"),
            Account::PlatformSuspense => f.write_str("platform:suspense"),
        }
    }
}

impl FromStr for Account {
    type Err = InvalidAccount;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidAccount(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(invalid)?;
        match kind {
            "external" if is_valid_provider(rest) => Ok(Account::External(rest.to_owned())),
            "escrow" => Uuid::parse_str(rest)
                .map(Account::Escrow)
                .map_err(|_| invalid()),
            "seller" => Reference::from_account_key(rest)
                .map(Account::Seller)
                .ok_or_else(invalid),
            "buyer" => Reference::from_account_key(rest)
                .map(Account::Buyer)
                .ok_or_else(invalid),
            "platform" => match rest {
                "fees" => Ok(Account::PlatformFees),
                "aml_fees" => Ok(Account::PlatformAmlFees),
                "adjustments" => Ok(Account::PlatformAdjustments),
                "suspense" => Ok(Account::PlatformSuspense),
                _ => Err(invalid()),
            },
            _ => Err(invalid()),
        }
    }
}

impl Serialize for Account {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Account {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_round_trip() {
        let id = Uuid::nil();
        for account in [
            Account::External("coinbase_commerce".into()),
            Account::Escrow(id),
            Account::Seller(Reference::entity(id)),
            Account::Buyer(Reference::external("merchant 7")),
            Account::PlatformFees,
            Account::PlatformAmlFees,
            Account::PlatformAdjustments,
            Account::PlatformSuspense,
        ] {
            assert_eq!(account.to_string().parse::<Account>().unwrap(), account);
        }
        assert_eq!(
            Account::Buyer(Reference::external("m7")).to_string(),
            "buyer:ext:m7"
        );
    }

    #[test]
    fn bad_account_names_are_refused() {
        for bad in [
            "external:Stripe",
            "escrow:42",
            "seller:ext:",
            "platform:cash",
            "fees",
            "",
        ] {
            assert!(bad.parse::<Account>().is_err(), "{bad}");
        }
    }

    #[test]
    fn references_serialize_as_the_contract_says() {
        let r: Reference =
            serde_json::from_str(r#"{"kind":"external","ref":"tmpl_8f2a"}"#).unwrap();
        assert_eq!(r, Reference::external("tmpl_8f2a"));
        let json = serde_json::to_value(Reference::entity(Uuid::nil())).unwrap();
        assert_eq!(json["kind"], "entity");
        assert!(serde_json::from_str::<Reference>(r#"{"kind":"entity","id":"x"}"#).is_err());
        assert!(serde_json::from_str::<Reference>(
            r#"{"kind":"entity","id":"00000000-0000-0000-0000-000000000000","x":1}"#
        )
        .is_err());
    }

    #[test]
    fn an_empty_external_reference_is_refused_as_it_would_name_no_account() {
        let err = serde_json::from_str::<Reference>(r#"{"kind":"external","ref":""}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not be empty"), "{err}");
        // Every reference that reads names an account that reads back.
        let r: Reference = serde_json::from_str(r#"{"kind":"external","ref":" "}"#).unwrap();
        let account = Account::Seller(r);
        assert_eq!(account.to_string().parse::<Account>().unwrap(), account);
    }

    #[test]
    fn new_input_is_bounded_but_stored_names_of_any_length_still_read() {
        let json = |n: usize| format!(r#"{{"kind":"external","ref":"{}"}}"#, "r".repeat(n));
        let at: Reference = serde_json::from_str(&json(MAX_KEY_LEN)).unwrap();
        assert!(at.is_bounded());
        // A longer one still decodes (an event stored before the bound) but is not
        // accepted as new input.
        let over: Reference = serde_json::from_str(&json(MAX_KEY_LEN + 1)).unwrap();
        assert!(!over.is_bounded());
        let name = Account::Buyer(over).to_string();
        let parsed: Account = name.parse().unwrap();
        assert!(!parsed.is_bounded());
        assert!(Account::Buyer(at).is_bounded());
        let provider: Account = format!("external:{}", "p".repeat(MAX_KEY_LEN + 1))
            .parse()
            .unwrap();
        assert!(!provider.is_bounded());
        assert!(is_valid_key_text(&"p".repeat(MAX_KEY_LEN)));
        assert!(!is_valid_key_text(&"p".repeat(MAX_KEY_LEN + 1)));
    }
}
