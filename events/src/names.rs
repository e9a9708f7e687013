//! Names that say what they name: a run's id, and two kinds of node name. A plan entry (`cp-1@v1.34`: one pass over a node) and a
//! host (`cp-1`: the Kubernetes node and its machine) are both strings on the wire, and an
//! entry is often spelled like its host; these types keep them apart in code, so a drain
//! cannot be pointed at an entry or an event at a host. Serialized as plain strings.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! name {
    ($(#[$doc:meta])* $t:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
            schemars::JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $t(String);

        impl $t {
            pub fn new(name: impl Into<String>) -> $t {
                $t(name.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $t {
            fn from(s: String) -> $t {
                $t(s)
            }
        }

        impl From<&str> for $t {
            fn from(s: &str) -> $t {
                $t(s.to_string())
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name!(
    /// A plan entry: one pass of the upgrade over one node (`w-1`, or `cp-1@v1.34` for a
    /// control-plane node upgraded once per minor hop). Events and the node machine name it.
    Entry
);

name!(
    /// A host: the Kubernetes node and the machine under it (`cp-1`). The cluster API and
    /// the node executor act on it.
    Host
);

/// A run's id: a UUID v7, so ids sort by creation time. Stored and sent as the UUID itself.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RunId(Uuid);

/// A UUID (v7), as text.
impl schemars::JsonSchema for RunId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RunId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "uuid"})
    }
}

impl RunId {
    /// A new id, after every earlier one.
    pub fn new() -> RunId {
        RunId(Uuid::now_v7())
    }

    /// The all-zero id (examples and tests).
    pub fn nil() -> RunId {
        RunId(Uuid::nil())
    }

    /// The id whose 128 bits are `n` (fixed ids for tests and samples).
    pub fn from_u128(n: u128) -> RunId {
        RunId(Uuid::from_u128(n))
    }

    pub fn from_bytes(bytes: [u8; 16]) -> RunId {
        RunId(Uuid::from_bytes(bytes))
    }

    /// From exactly 16 bytes (a log key's run part).
    pub fn from_slice(bytes: &[u8]) -> Option<RunId> {
        Uuid::from_slice(bytes).ok().map(RunId)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for RunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<RunId, uuid::Error> {
        s.parse().map(RunId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_strings_on_the_wire() {
        let e = Entry::new("cp-1@v1.34");
        assert_eq!(serde_json::to_string(&e).expect("json"), "\"cp-1@v1.34\"");
        let h: Host = serde_json::from_str("\"cp-1\"").expect("json");
        assert_eq!(h, "cp-1");
        assert_eq!(h.to_string(), "cp-1");
    }
}
