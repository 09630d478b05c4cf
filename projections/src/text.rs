//! How domain values are written into read-table columns and read back: enums by their
//! stored (serde) names, references in their account-key form (`<uuid>` or `ext:<text>`,
//! as inside account names).

use ledger::{Account, Reference};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An enum's stored name (`"under_review"`).
pub(crate) fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// Parses an enum from its stored name.
pub(crate) fn parse_enum<T: DeserializeOwned>(column: &str, text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("column {column} holds {text:?}, which is not a known value"))
}

/// A reference in account-key form.
pub(crate) fn reference_key(r: &Reference) -> String {
    r.account_key()
}

/// Parses a reference from its account-key form, by the account names' own rules.
pub(crate) fn parse_reference(column: &str, key: &str) -> Result<Reference, String> {
    match format!("buyer:{key}").parse::<Account>() {
        Ok(Account::Buyer(r)) => Ok(r),
        _ => Err(format!(
            "column {column} holds {key:?}, which is not a reference"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::dispute::DisputeStatus;
    use uuid::Uuid;

    #[test]
    fn enums_and_references_round_trip() {
        assert_eq!(enum_name(&DisputeStatus::UnderReview), "under_review");
        assert_eq!(
            parse_enum::<DisputeStatus>("s", "under_review"),
            Ok(DisputeStatus::UnderReview)
        );
        assert!(parse_enum::<DisputeStatus>("s", "nope").is_err());
        for r in [
            Reference::entity(Uuid::new_v4()),
            Reference::external("tmpl 8f:2a"),
            Reference::external(Uuid::new_v4().to_string()),
        ] {
            assert_eq!(parse_reference("r", &reference_key(&r)), Ok(r));
        }
    }
}
