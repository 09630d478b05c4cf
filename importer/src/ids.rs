//! Deterministic identity: every legacy ObjectId becomes a UUID v5 of its 24 lower-case hex
//! digits under one namespace per target collection, and every imported event's id derives
//! from (collection, `_id`, position in the document, kind), so a re-run collides with what
//! an earlier run wrote instead of writing it twice. The namespaces are published in
//! `docs/legacy-ids.md`: other systems derive the same ids.

use uuid::Uuid;

/// The collections (imported or only referenced) whose ObjectIds map to UUIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    /// `payments` (imported).
    Payments,
    /// `fundsledgerentries` (imported).
    FundsLedgerEntries,
    /// `disputes` (imported).
    Disputes,
    /// `users` (referenced).
    Users,
    /// `purchaserequests` (referenced).
    PurchaseRequests,
    /// `selleroffers` (referenced).
    SellerOffers,
    /// `chats` (referenced).
    Chats,
    /// Evidence embedded in `disputes` (its `_id`).
    DisputeEvidence,
    /// Messages embedded in `disputes` (their `_id`).
    DisputeMessages,
}

impl Collection {
    /// Every collection with a namespace, in the order `docs/legacy-ids.md` lists them.
    pub const ALL: [Collection; 9] = [
        Collection::Payments,
        Collection::FundsLedgerEntries,
        Collection::Disputes,
        Collection::Users,
        Collection::PurchaseRequests,
        Collection::SellerOffers,
        Collection::Chats,
        Collection::DisputeEvidence,
        Collection::DisputeMessages,
    ];

    /// The legacy name (`"fundsledgerentries"`; embedded ones as `"disputes.evidence"`).
    pub fn name(self) -> &'static str {
        match self {
            Collection::Payments => "payments",
            Collection::FundsLedgerEntries => "fundsledgerentries",
            Collection::Disputes => "disputes",
            Collection::Users => "users",
            Collection::PurchaseRequests => "purchaserequests",
            Collection::SellerOffers => "selleroffers",
            Collection::Chats => "chats",
            Collection::DisputeEvidence => "disputes.evidence",
            Collection::DisputeMessages => "disputes.messages",
        }
    }

    /// Parses a legacy name exactly.
    pub fn from_name(name: &str) -> Option<Collection> {
        Collection::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether the importer writes documents of this collection (and keeps an id map).
    pub fn is_imported(self) -> bool {
        matches!(
            self,
            Collection::Payments | Collection::FundsLedgerEntries | Collection::Disputes
        )
    }

    /// This collection's UUID v5 namespace: UUID v5 of `urn:escrow-ledger:legacy:<name>`
    /// under the standard URL namespace.
    pub fn namespace(self) -> Uuid {
        Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("urn:escrow-ledger:legacy:{}", self.name()).as_bytes(),
        )
    }

    /// The UUID a legacy ObjectId (24 hex digits, any case) of this collection maps to.
    pub fn uuid_of(self, object_id_hex: &str) -> Uuid {
        Uuid::new_v5(
            &self.namespace(),
            object_id_hex.to_ascii_lowercase().as_bytes(),
        )
    }
}

/// The namespace of imported events' ids.
pub fn event_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"urn:escrow-ledger:legacy-events")
}

/// The id of the event made from a legacy document: `index` is its position among the
/// events of that document (0 for the first), `kind` its event type.
pub fn event_id(collection: Collection, object_id_hex: &str, index: u32, kind: &str) -> Uuid {
    Uuid::new_v5(
        &event_namespace(),
        format!(
            "{}/{}/{index}/{kind}",
            collection.name(),
            object_id_hex.to_ascii_lowercase()
        )
        .as_bytes(),
    )
}

/// Whether `text` is exactly 24 hex digits (the text form of an ObjectId).
pub fn is_object_id_hex(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_namespaces_do_not_change() {
        // docs/legacy-ids.md publishes these values: changing one breaks other systems.
        let published = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/legacy-ids.md"
        ))
        .unwrap();
        for c in Collection::ALL {
            let line = format!("| `{}` | `{}` |", c.name(), c.namespace());
            assert!(published.contains(&line), "docs/legacy-ids.md lacks {line}");
        }
        assert!(published.contains(&event_namespace().to_string()));
    }

    #[test]
    fn ids_are_deterministic_and_case_blind() {
        let a = Collection::Payments.uuid_of("65A1B2C3D4E5F60718293A4B");
        let b = Collection::Payments.uuid_of("65a1b2c3d4e5f60718293a4b");
        assert_eq!(a, b);
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, Collection::Users.uuid_of("65a1b2c3d4e5f60718293a4b"));
        let e1 = event_id(
            Collection::Payments,
            "65a1b2c3d4e5f60718293a4b",
            0,
            "PaymentImported",
        );
        assert_eq!(
            e1,
            event_id(
                Collection::Payments,
                "65A1B2C3D4E5F60718293A4B",
                0,
                "PaymentImported"
            )
        );
        assert_ne!(
            e1,
            event_id(
                Collection::Payments,
                "65a1b2c3d4e5f60718293a4b",
                1,
                "PaymentImported"
            )
        );
    }

    #[test]
    fn object_id_text_is_24_hex_digits() {
        assert!(is_object_id_hex("65a1b2c3d4e5f60718293a4b"));
        assert!(!is_object_id_hex("65a1b2c3d4e5f60718293a4"));
        assert!(!is_object_id_hex("tmpl_8f2a"));
        assert!(!is_object_id_hex("65a1b2c3d4e5f60718293a4g"));
    }
}
