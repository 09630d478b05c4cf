//! One legacy (sub)document, checked whole and then read field by field with the exact
//! types the contract allows. Reads record the oddities they meet in [`Notes`].

use bson::oid::ObjectId;
use bson::raw::ErrorKind;
use bson::spec::ElementType;
use bson::{RawBsonRef, RawDocument};
use chrono::{DateTime, Datelike, Utc};
use ledger::account::{Reference, MAX_KEY_LEN};
use serde_json::Value;

use super::money::{amount, Amount};
use super::{Anomaly, AnomalyKind, Reject, RejectCode};
use crate::ids::{is_object_id_hex, Collection};

/// The oddities met while reading one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// In the order met.
    pub anomalies: Vec<Anomaly>,
}

impl Notes {
    /// Records an oddity.
    pub fn add(&mut self, kind: AnomalyKind, detail: impl Into<String>) {
        self.anomalies.push(Anomaly::new(kind, detail));
    }
}

/// A checked (sub)document: its top-level fields, by path.
#[derive(Debug, Clone)]
pub struct Doc<'a> {
    path: String,
    fields: Vec<(&'a str, RawBsonRef<'a>)>,
}

fn type_name(t: ElementType) -> String {
    format!("{t:?}")
}

/// Checks a whole document, at every depth: no key twice, valid UTF-8, only the BSON
/// types the contract uses.
///
/// # Errors
/// `DuplicateKey`, `InvalidUtf8`, `UnsupportedBsonType` or `MalformedBson`, with the path.
pub fn check_tree(doc: &RawDocument, path: &str) -> Result<(), Reject> {
    let mut seen = std::collections::HashSet::new();
    for element in doc.iter_elements() {
        let element = element.map_err(|e| bson_error(path, &e))?;
        let key = element.key();
        let here = join(path, key);
        if !seen.insert(key) {
            return Err(Reject::at(
                RejectCode::DuplicateKey,
                &here,
                format!("key {key:?} appears more than once"),
            ));
        }
        let value = element.value().map_err(|e| bson_error(&here, &e))?;
        match value {
            RawBsonRef::Document(d) => check_tree(d, &here)?,
            RawBsonRef::Array(a) => {
                let inner =
                    RawDocument::from_bytes(a.as_bytes()).map_err(|e| bson_error(&here, &e))?;
                check_tree(inner, &here)?;
            }
            RawBsonRef::Double(_)
            | RawBsonRef::String(_)
            | RawBsonRef::Boolean(_)
            | RawBsonRef::Null
            | RawBsonRef::ObjectId(_)
            | RawBsonRef::DateTime(_)
            | RawBsonRef::Int32(_)
            | RawBsonRef::Int64(_)
            | RawBsonRef::Decimal128(_) => {}
            other => {
                return Err(Reject::at(
                    RejectCode::UnsupportedBsonType,
                    &here,
                    format!(
                        "BSON type {} is outside the contract",
                        type_name(other.element_type())
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn bson_error(path: &str, e: &bson::raw::Error) -> Reject {
    let code = match e.kind {
        ErrorKind::Utf8EncodingError(_) => RejectCode::InvalidUtf8,
        _ => RejectCode::MalformedBson,
    };
    let at = match e.key() {
        Some(k) => join(path, k),
        None => path.to_owned(),
    };
    Reject {
        code,
        field: (!at.is_empty()).then_some(at),
        detail: e.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Converts BSON milliseconds to a UTC time within years 1 to 9999 (what PostgreSQL and
/// RFC 3339 both hold), checking the range first: `to_chrono` would clamp.
///
/// # Errors
/// `DateOutOfRange`.
pub fn date_from_millis(field: &str, millis: i64) -> Result<DateTime<Utc>, Reject> {
    let out = || {
        Reject::at(
            RejectCode::DateOutOfRange,
            field,
            format!("{millis} ms since 1970 is outside years 1 to 9999"),
        )
    };
    let at = DateTime::<Utc>::from_timestamp_millis(millis).ok_or_else(out)?;
    if !(1..=9999).contains(&at.year()) {
        return Err(out());
    }
    Ok(at)
}

/// The creation time embedded in an ObjectId (seconds).
pub fn object_id_time(oid: ObjectId) -> DateTime<Utc> {
    let b = oid.bytes();
    let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    DateTime::<Utc>::from_timestamp(i64::from(secs), 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

impl<'a> Doc<'a> {
    /// Checks `doc` whole and reads its top-level fields.
    ///
    /// # Errors
    /// See [`check_tree`].
    pub fn read(doc: &'a RawDocument, path: &str) -> Result<Doc<'a>, Reject> {
        check_tree(doc, path)?;
        Doc::read_checked(doc, path)
    }

    fn read_checked(doc: &'a RawDocument, path: &str) -> Result<Doc<'a>, Reject> {
        let mut fields = Vec::new();
        for item in doc {
            let (k, v) = item.map_err(|e| bson_error(path, &e))?;
            fields.push((k, v));
        }
        Ok(Doc {
            path: path.to_owned(),
            fields,
        })
    }

    /// The path of `key` in the whole document.
    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw value of `key`; `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<RawBsonRef<'a>> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !matches!(v, RawBsonRef::Null))
    }

    /// Whether `key` is present (even null).
    pub fn has(&self, key: &str) -> bool {
        self.fields.iter().any(|(k, _)| *k == key)
    }

    /// Notes every field not in `known` (and not `__v`) as carried verbatim.
    pub fn note_unknown(&self, known: &[&str], notes: &mut Notes) {
        for (k, _) in &self.fields {
            if *k != "__v" && !known.contains(k) {
                notes.add(AnomalyKind::UnknownField, self.path(k));
            }
        }
    }

    /// The unknown fields (not in `known`, not `__v`) as canonical Extended JSON.
    pub fn unknown_json(&self, known: &[&str], notes: &mut Notes) -> Option<Value> {
        let mut map = serde_json::Map::new();
        for (k, v) in &self.fields {
            if *k != "__v" && !known.contains(k) {
                let mut json = value_json(*v);
                if super::ejson::replace_nul(&mut json) {
                    notes.add(AnomalyKind::ReplacedNul, self.path(k));
                }
                map.insert((*k).to_owned(), json);
            }
        }
        (!map.is_empty()).then_some(Value::Object(map))
    }

    fn wrong(&self, key: &str, expected: &str, found: RawBsonRef<'_>) -> Reject {
        Reject::at(
            RejectCode::WrongType,
            &self.path(key),
            format!(
                "expected {expected}, found {}",
                type_name(found.element_type())
            ),
        )
    }

    fn missing(&self, key: &str) -> Reject {
        Reject::at(RejectCode::MissingField, &self.path(key), "absent or null")
    }

    /// The document's `_id`, which must be an ObjectId.
    ///
    /// # Errors
    /// `BadId`.
    pub fn id(&self) -> Result<ObjectId, Reject> {
        match self.get("_id") {
            Some(RawBsonRef::ObjectId(oid)) => Ok(oid),
            Some(other) => Err(Reject::at(
                RejectCode::BadId,
                &self.path("_id"),
                format!("_id is {}", type_name(other.element_type())),
            )),
            None => Err(Reject::at(RejectCode::BadId, &self.path("_id"), "no _id")),
        }
    }

    /// An ObjectId field; `None` when absent or null.
    ///
    /// # Errors
    /// `WrongType`.
    pub fn object_id(&self, key: &str) -> Result<Option<ObjectId>, Reject> {
        match self.get(key) {
            None => Ok(None),
            Some(RawBsonRef::ObjectId(oid)) => Ok(Some(oid)),
            Some(other) => Err(self.wrong(key, "ObjectId", other)),
        }
    }

    /// A required ObjectId field, as an entity of `collection`.
    ///
    /// # Errors
    /// `MissingField`, `WrongType`.
    pub fn entity(&self, key: &str, collection: Collection) -> Result<Reference, Reject> {
        let oid = self.object_id(key)?.ok_or_else(|| self.missing(key))?;
        Ok(Reference::entity(collection.uuid_of(&oid.to_hex())))
    }

    /// A string field, U+0000 replaced (and noted); `None` when absent or null.
    ///
    /// # Errors
    /// `WrongType`.
    pub fn text(&self, key: &str, notes: &mut Notes) -> Result<Option<String>, Reject> {
        match self.get(key) {
            None => Ok(None),
            Some(RawBsonRef::String(s)) => Ok(Some(self.clean(key, s, notes))),
            Some(other) => Err(self.wrong(key, "string", other)),
        }
    }

    /// An optional string field that names something stored under a key (a provider's
    /// reference): at most [`MAX_KEY_LEN`] bytes, as the ledger takes them.
    ///
    /// # Errors
    /// `WrongType`, `InvalidValue` (too long).
    pub fn key_text(&self, key: &str, notes: &mut Notes) -> Result<Option<String>, Reject> {
        let text = self.text(key, notes)?;
        match text {
            Some(t) if t.len() > MAX_KEY_LEN => Err(self.too_long(key, t.len())),
            other => Ok(other),
        }
    }

    fn too_long(&self, key: &str, len: usize) -> Reject {
        Reject::at(
            RejectCode::InvalidValue,
            &self.path(key),
            format!("{len} bytes long: the ledger keys at most {MAX_KEY_LEN}"),
        )
    }

    /// A required string field.
    ///
    /// # Errors
    /// `MissingField`, `WrongType`.
    pub fn required_text(&self, key: &str, notes: &mut Notes) -> Result<String, Reject> {
        self.text(key, notes)?.ok_or_else(|| self.missing(key))
    }

    fn clean(&self, key: &str, s: &str, notes: &mut Notes) -> String {
        if s.contains('\0') {
            notes.add(AnomalyKind::ReplacedNul, self.path(key));
            s.replace('\0', "\u{fffd}")
        } else {
            s.to_owned()
        }
    }

    /// A string field that must be one of `allowed` values (parsed by `parse`).
    ///
    /// # Errors
    /// `MissingField`, `WrongType`, `InvalidValue`.
    pub fn choice<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Option<T>,
        notes: &mut Notes,
    ) -> Result<Option<T>, Reject> {
        let Some(text) = self.text(key, notes)? else {
            return Ok(None);
        };
        parse(&text).map(Some).ok_or_else(|| {
            Reject::at(
                RejectCode::InvalidValue,
                &self.path(key),
                format!("{text:?} is not a value the contract lists"),
            )
        })
    }

    /// A date field (BSON datetime only: dates are never strings here); `None` when absent
    /// or null.
    ///
    /// # Errors
    /// `WrongType`, `DateOutOfRange`.
    pub fn date(&self, key: &str) -> Result<Option<DateTime<Utc>>, Reject> {
        match self.get(key) {
            None => Ok(None),
            Some(RawBsonRef::DateTime(d)) => {
                date_from_millis(&self.path(key), d.timestamp_millis()).map(Some)
            }
            Some(other) => Err(self.wrong(key, "Date", other)),
        }
    }

    /// A "Mixed" reference: an ObjectId → entity of `collection`; a string of 24 hex
    /// digits → the same entity (noted as ambiguous); another non-empty string → external,
    /// verbatim; absent or null → `None`.
    ///
    /// # Errors
    /// `EmptyReference`, `WrongType`.
    pub fn mixed(
        &self,
        key: &str,
        collection: Collection,
        notes: &mut Notes,
    ) -> Result<Option<Reference>, Reject> {
        match self.get(key) {
            None => Ok(None),
            Some(RawBsonRef::ObjectId(oid)) => {
                Ok(Some(Reference::entity(collection.uuid_of(&oid.to_hex()))))
            }
            Some(RawBsonRef::String(s)) if is_object_id_hex(s) => {
                notes.add(
                    AnomalyKind::AmbiguousReference,
                    format!("{}: string {s:?} taken as ObjectId", self.path(key)),
                );
                Ok(Some(Reference::entity(collection.uuid_of(s))))
            }
            Some(RawBsonRef::String("")) => Err(Reject::at(
                RejectCode::EmptyReference,
                &self.path(key),
                "empty string",
            )),
            Some(RawBsonRef::String(s)) => Ok(Some(Reference::external(self.clean(key, s, notes)))),
            Some(other) => Err(self.wrong(key, "ObjectId or string", other)),
        }
    }

    /// [`Doc::mixed`] for a reference that names an account or an index key (a seller, a
    /// payment's purchase request): an external text longer than [`MAX_KEY_LEN`] bytes,
    /// which the ledger cannot key, is refused.
    ///
    /// # Errors
    /// As [`Doc::mixed`], and `InvalidValue` (too long).
    pub fn mixed_key(
        &self,
        key: &str,
        collection: Collection,
        notes: &mut Notes,
    ) -> Result<Option<Reference>, Reject> {
        let r = self.mixed(key, collection, notes)?;
        match r {
            Some(Reference::External { reference }) if reference.len() > MAX_KEY_LEN => {
                Err(self.too_long(key, reference.len()))
            }
            other => Ok(other),
        }
    }

    /// A reference that must name a document of ours (`paymentId`): an ObjectId or a
    /// string of 24 hex digits (noted as ambiguous); returns the lower-case hex.
    ///
    /// # Errors
    /// `PaymentIdNotObjectId`, `WrongType`.
    pub fn our_id(&self, key: &str, notes: &mut Notes) -> Result<Option<String>, Reject> {
        match self.get(key) {
            None => Ok(None),
            Some(RawBsonRef::ObjectId(oid)) => Ok(Some(oid.to_hex())),
            Some(RawBsonRef::String(s)) if is_object_id_hex(s) => {
                notes.add(
                    AnomalyKind::AmbiguousReference,
                    format!("{}: string {s:?} taken as ObjectId", self.path(key)),
                );
                Ok(Some(s.to_ascii_lowercase()))
            }
            Some(RawBsonRef::String(s)) => Err(Reject::at(
                RejectCode::PaymentIdNotObjectId,
                &self.path(key),
                format!("{s:?} is not 24 hex digits"),
            )),
            Some(other) => Err(self.wrong(key, "ObjectId", other)),
        }
    }

    /// A money field, exact; `None` when absent or null.
    ///
    /// # Errors
    /// `WrongType` and the money reasons of [`amount`].
    pub fn money(&self, key: &str) -> Result<Option<Amount>, Reject> {
        self.get(key)
            .map(|v| amount(&self.path(key), v))
            .transpose()
    }

    /// A required money field.
    ///
    /// # Errors
    /// `MissingField` and those of [`Doc::money`].
    pub fn required_money(&self, key: &str) -> Result<Amount, Reject> {
        self.money(key)?.ok_or_else(|| self.missing(key))
    }

    /// An object field as canonical Extended JSON (U+0000 replaced, noted); `None` when
    /// absent or null.
    ///
    /// # Errors
    /// `WrongType`.
    pub fn object_json(&self, key: &str, notes: &mut Notes) -> Result<Option<Value>, Reject> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ RawBsonRef::Document(_)) => {
                let mut json = value_json(v);
                if super::ejson::replace_nul(&mut json) {
                    notes.add(AnomalyKind::ReplacedNul, self.path(key));
                }
                Ok(Some(json))
            }
            Some(other) => Err(self.wrong(key, "object", other)),
        }
    }

    /// An array field's subdocuments, each checked; absent or null → empty.
    ///
    /// # Errors
    /// `WrongType` (not an array, or an item that is not an object).
    pub fn sub_documents(&self, key: &str) -> Result<Vec<Doc<'a>>, Reject> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(RawBsonRef::Array(a)) => {
                let mut out = Vec::new();
                for (i, item) in a.into_iter().enumerate() {
                    let here = format!("{}.{i}", self.path(key));
                    match item.map_err(|e| bson_error(&here, &e))? {
                        RawBsonRef::Document(d) => out.push(Doc::read_checked(d, &here)?),
                        other => {
                            return Err(Reject::at(
                                RejectCode::WrongType,
                                &here,
                                format!(
                                    "expected object, found {}",
                                    type_name(other.element_type())
                                ),
                            ))
                        }
                    }
                }
                Ok(out)
            }
            Some(other) => Err(self.wrong(key, "array", other)),
        }
    }

    /// An array of strings (U+0000 replaced); absent or null → empty.
    ///
    /// # Errors
    /// `WrongType`.
    pub fn strings(&self, key: &str, notes: &mut Notes) -> Result<Vec<String>, Reject> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(RawBsonRef::Array(a)) => {
                let mut out = Vec::new();
                for (i, item) in a.into_iter().enumerate() {
                    let here = format!("{key}.{i}");
                    match item.map_err(|e| bson_error(&self.path(&here), &e))? {
                        RawBsonRef::String(s) => out.push(self.clean(&here, s, notes)),
                        other => return Err(self.wrong(&here, "string", other)),
                    }
                }
                Ok(out)
            }
            Some(other) => Err(self.wrong(key, "array", other)),
        }
    }
}

/// A checked value as canonical Extended JSON.
fn value_json(v: RawBsonRef<'_>) -> Value {
    match v {
        RawBsonRef::Document(d) => super::ejson::canonical(d).unwrap_or(Value::Null),
        other => bson::Bson::try_from(other.to_raw_bson())
            .map_or(Value::Null, bson::Bson::into_canonical_extjson),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    fn raw_with_duplicate() -> Vec<u8> {
        // { "_id": ObjectId, "a": "first", "a": "second" }, written byte by byte.
        let mut body = Vec::new();
        body.push(0x07);
        body.extend_from_slice(b"_id\0");
        body.extend_from_slice(&[0x65; 12]);
        for v in ["first", "second"] {
            body.push(0x02);
            body.extend_from_slice(b"a\0");
            body.extend_from_slice(&i32::try_from(v.len() + 1).unwrap().to_le_bytes());
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        let mut doc = (i32::try_from(body.len() + 5).unwrap())
            .to_le_bytes()
            .to_vec();
        doc.extend_from_slice(&body);
        doc.push(0);
        doc
    }

    #[test]
    fn a_key_twice_is_rejected_although_get_would_pick_the_first() {
        let bytes = raw_with_duplicate();
        let raw = RawDocument::from_bytes(&bytes).unwrap();
        assert_eq!(raw.get_str("a").unwrap(), "first");
        let err = Doc::read(raw, "").unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            (RejectCode::DuplicateKey, Some("a"))
        );
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        // { "s": "ab" }: the value's first byte sits 4 bytes before the end.
        let mut bytes = rawdoc! { "s": "ab" }.into_bytes();
        let value_at = bytes.len() - 4;
        assert_eq!(bytes[value_at], b'a');
        bytes[value_at] = 0xff;
        let raw = RawDocument::from_bytes(&bytes).unwrap();
        let err = Doc::read(raw, "").unwrap_err();
        assert_eq!(err.code, RejectCode::InvalidUtf8);
    }

    #[test]
    fn types_outside_the_contract_are_rejected_at_any_depth() {
        let cases = [
            rawdoc! { "x": bson::RawBson::Symbol("s".into()) },
            rawdoc! { "m": { "t": bson::Timestamp { time: 1, increment: 2 } } },
            rawdoc! { "arr": [ bson::RawBson::MinKey ] },
            rawdoc! { "k": bson::RawBson::MaxKey },
        ];
        for doc in &cases {
            let err = Doc::read(doc, "").unwrap_err();
            assert_eq!(err.code, RejectCode::UnsupportedBsonType, "{err}");
        }
    }

    #[test]
    fn dates_outside_years_1_to_9999_are_refused_not_clamped() {
        assert!(date_from_millis("d", 0).is_ok());
        assert_eq!(
            date_from_millis("d", i64::MAX).unwrap_err().code,
            RejectCode::DateOutOfRange
        );
        assert_eq!(
            date_from_millis("d", 300_000_000_000_000).unwrap_err().code,
            RejectCode::DateOutOfRange
        );
        assert_eq!(
            date_from_millis("d", -62_200_000_000_000).unwrap_err().code,
            RejectCode::DateOutOfRange
        );
    }

    #[test]
    fn mixed_references_follow_the_contract() {
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let doc = rawdoc! {
            "o": oid, "h": "65A1B2C3D4E5F60718293A4B", "t": "tmpl_8f2a", "e": "", "n": null, "i": 5_i32
        };
        let d = Doc::read(&doc, "").unwrap();
        let mut notes = Notes::default();
        let c = Collection::PurchaseRequests;
        let o = d.mixed("o", c, &mut notes).unwrap();
        assert_eq!(o, d.mixed("h", c, &mut notes).unwrap());
        assert_eq!(notes.anomalies.len(), 1);
        assert_eq!(notes.anomalies[0].kind, AnomalyKind::AmbiguousReference);
        assert_eq!(
            d.mixed("t", c, &mut notes).unwrap(),
            Some(Reference::external("tmpl_8f2a"))
        );
        assert_eq!(d.mixed("n", c, &mut notes).unwrap(), None);
        assert_eq!(d.mixed("absent", c, &mut notes).unwrap(), None);
        assert_eq!(
            d.mixed("e", c, &mut notes).unwrap_err().code,
            RejectCode::EmptyReference
        );
        assert_eq!(
            d.mixed("i", c, &mut notes).unwrap_err().code,
            RejectCode::WrongType
        );
        let long = rawdoc! { "at": "x".repeat(MAX_KEY_LEN), "over": "x".repeat(MAX_KEY_LEN + 1) };
        let l = Doc::read(&long, "").unwrap();
        assert!(l.mixed_key("at", c, &mut notes).unwrap().is_some());
        assert!(l.mixed("over", c, &mut notes).unwrap().is_some());
        assert_eq!(
            l.mixed_key("over", c, &mut notes).unwrap_err().code,
            RejectCode::InvalidValue
        );
        assert!(l.key_text("at", &mut notes).unwrap().is_some());
        assert_eq!(
            l.key_text("over", &mut notes).unwrap_err().code,
            RejectCode::InvalidValue
        );
        assert_eq!(
            d.our_id("t", &mut notes).unwrap_err().code,
            RejectCode::PaymentIdNotObjectId
        );
    }

    #[test]
    fn text_replaces_nul_and_notes_it() {
        let doc = rawdoc! { "s": "a\u{0}b\u{1}c" };
        let d = Doc::read(&doc, "").unwrap();
        let mut notes = Notes::default();
        assert_eq!(
            d.text("s", &mut notes).unwrap().unwrap(),
            "a\u{fffd}b\u{1}c"
        );
        assert_eq!(notes.anomalies[0].kind, AnomalyKind::ReplacedNul);
    }

    #[test]
    fn object_id_time_is_its_first_four_bytes() {
        let oid = ObjectId::parse_str("5f5e10000000000000000000").unwrap();
        assert_eq!(object_id_time(oid).timestamp(), 0x5f5e_1000);
    }
}
