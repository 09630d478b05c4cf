//! Decoding stored events back into domain events: the stored `event_type` and
//! `schema_version` select the shape, and anything unknown is an error, never a guess.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a stored event could not be turned back into a domain event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The stored type name is not one this aggregate knows.
    #[error("unknown event type {event_type:?}")]
    UnknownEventType {
        /// The stored type name.
        event_type: String,
    },
    /// The type is known but not at this schema version (an upcaster is missing).
    #[error("event type {event_type:?} has no schema version {schema_version}")]
    UnsupportedSchemaVersion {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        schema_version: i32,
    },
    /// The payload does not have the shape of its type.
    #[error("payload of {event_type:?} does not decode: {message}")]
    Payload {
        /// The stored type name.
        event_type: String,
        /// What serde said.
        message: String,
    },
}

/// Deserializes `payload` into `T`, naming `event_type` in the error.
///
/// # Errors
/// [`DecodeError::Payload`].
pub fn payload_as<T: DeserializeOwned>(
    event_type: &str,
    payload: &Value,
) -> Result<T, DecodeError> {
    T::deserialize(payload).map_err(|e| DecodeError::Payload {
        event_type: event_type.to_owned(),
        message: e.to_string(),
    })
}

/// Checks that `schema_version` is one this code reads (only 1 so far).
///
/// # Errors
/// [`DecodeError::UnsupportedSchemaVersion`].
pub fn check_schema_version(event_type: &str, schema_version: i32) -> Result<(), DecodeError> {
    if schema_version == 1 {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedSchemaVersion {
            event_type: event_type.to_owned(),
            schema_version,
        })
    }
}

/// Implements the stored-event codec of a domain event enum whose every variant wraps a
/// struct of the same name: `event_type` (the variant's name), `payload` (the struct as
/// JSON), `decode`, `EVENT_TYPES`, and `From<Struct>` for each variant.
macro_rules! event_codec {
    ($enum:ident { $($variant:ident),+ $(,)? }) => {
        impl $enum {
            /// Every stored type name this enum decodes.
            pub const EVENT_TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];

            /// The stored name of this event's type (the variant's name): a contract.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $( $enum::$variant(_) => stringify!($variant), )+
                }
            }

            /// The payload to store: the variant's struct as a JSON object, amounts as
            /// strings. Schema version 1.
            pub fn payload(&self) -> serde_json::Value {
                let encoded = match self {
                    $( $enum::$variant(e) => serde_json::to_value(e), )+
                };
                // Serializing these plain structs cannot fail (string keys only).
                encoded.unwrap_or(serde_json::Value::Null)
            }

            /// Decodes a stored event from its type name, schema version and payload.
            ///
            /// # Errors
            /// [`DecodeError`](crate::decode::DecodeError) for an unknown type, an
            /// unsupported schema version, or a payload of the wrong shape.
            pub fn decode(
                event_type: &str,
                schema_version: i32,
                payload: &serde_json::Value,
            ) -> Result<Self, $crate::decode::DecodeError> {
                match event_type {
                    $(
                        stringify!($variant) => {
                            $crate::decode::check_schema_version(event_type, schema_version)?;
                            Ok($enum::$variant($crate::decode::payload_as(event_type, payload)?))
                        }
                    )+
                    _ => Err($crate::decode::DecodeError::UnknownEventType {
                        event_type: event_type.to_owned(),
                    }),
                }
            }
        }

        $(
            impl From<$variant> for $enum {
                fn from(event: $variant) -> Self {
                    $enum::$variant(event)
                }
            }
        )+
    };
}

pub(crate) use event_codec;
