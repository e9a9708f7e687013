//! Kubernetes release versions (`v1.35.3`) and the minor-version arithmetic the skew rules need.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Kubernetes release version, `vMAJOR.MINOR.PATCH`. `"v1.35.3"` in JSON; three integers in
/// stored records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

/// Why a version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Kubernetes version {input:?}: {reason} (expected e.g. v1.35.3)")]
pub struct VersionError {
    pub input: String,
    pub reason: &'static str,
}

impl Version {
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// The same minor with patch 0; used to compare minors.
    pub const fn minor_version(self) -> (u16, u16) {
        (self.major, self.minor)
    }

    /// Number of minor releases from `self` up to `other` (negative when `other` is older).
    /// Only meaningful inside one major, which is all Kubernetes has had since 2015.
    pub fn minors_to(self, other: Version) -> i32 {
        if self.major != other.major {
            return if other.major > self.major {
                i32::MAX
            } else {
                i32::MIN
            };
        }
        i32::from(other.minor) - i32::from(self.minor)
    }
}

/// The stored (binary) shape; keep it byte-compatible with the golden samples.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Version")]
struct Raw {
    major: u16,
    minor: u16,
    patch: u16,
}

impl schemars::JsonSchema for Version {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Version".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^v[0-9]+\\.[0-9]+\\.[0-9]+$",
            "description": "A Kubernetes release, like v1.35.3"
        })
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            Raw {
                major: self.major,
                minor: self.minor,
                patch: self.patch,
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            // "v1.35.3", or the {major, minor, patch} object that plans recorded by the first
            // builds carry inside their JSON.
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Version;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a version such as \"v1.35.3\"")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Version, E> {
                    v.parse().map_err(E::custom)
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    map: A,
                ) -> Result<Version, A::Error> {
                    let r = Raw::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                    Ok(Version::new(r.major, r.minor, r.patch))
                }
            }
            d.deserialize_any(V)
        } else {
            let r = Raw::deserialize(d)?;
            Ok(Version::new(r.major, r.minor, r.patch))
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The first release whose kubelet refuses to start on cgroup v1.
pub const CGROUP_V2_FROM: Version = Version::new(1, 35, 0);

impl Version {
    /// Does a kubelet of this version need cgroup v2? (1.35 removed cgroup v1 support.)
    /// The one place the release lives: the planner's findings ask here, and the node
    /// preflight's rule (`rules::NODE_RULES`, which the daemon and the sim's agents ask)
    /// starts from [`CGROUP_V2_FROM`].
    pub fn needs_cgroup_v2(self) -> bool {
        self.minor_version() >= CGROUP_V2_FROM.minor_version()
    }

    /// A version an operator names as a *target*: a release, `v1.35.3`. Pre-release and build
    /// suffixes (`-rc.1`, `+abc`), which `FromStr` tolerates in what nodes report, are
    /// refused rather than silently dropped.
    pub fn parse_release(input: &str) -> Result<Version, VersionError> {
        let s = input.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        if s.contains(['-', '+']) {
            return Err(VersionError {
                input: input.to_string(),
                reason: "pre-release (-rc.1) and build (+abc) suffixes are not upgrade targets; \
                         name a release",
            });
        }
        input.parse()
    }
}

impl FromStr for Version {
    type Err = VersionError;

    /// Accepts `v1.35.3`, `1.35.3`, and kubelet's `v1.35.3-rc.1+k3s`-style suffixes (ignored).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| VersionError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let core = s.split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let mut next = |what| -> Result<u16, VersionError> {
            let p = parts.next().ok_or_else(|| err(what))?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("each part must be a decimal number"));
            }
            p.parse().map_err(|_| err("number out of range"))
        };
        let major = next("missing major")?;
        let minor = next("missing minor")?;
        let patch = next("missing patch")?;
        if parts.next().is_some() {
            return Err(err("too many parts"));
        }
        Ok(Self::new(major, minor, patch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (input, want) in [
            ("v1.35.3", Version::new(1, 35, 3)),
            ("1.32.0", Version::new(1, 32, 0)),
            ("v1.33.1-rc.0+abc", Version::new(1, 33, 1)),
        ] {
            assert_eq!(input.parse::<Version>(), Ok(want), "{input}");
        }
        assert_eq!(Version::new(1, 35, 3).to_string(), "v1.35.3");
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "v",
            "1.35",
            "v1.35.x",
            "1.35.3.4",
            "v1..3",
            "v1.99999.0",
            "v-1.2.3",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_target_is_a_release_without_suffixes() {
        assert_eq!(
            Version::parse_release("v1.35.3"),
            Ok(Version::new(1, 35, 3))
        );
        for bad in ["v1.35.3-rc.1+abc", "v1.35.3-rc.1", "1.35.3+abc"] {
            let e = Version::parse_release(bad).expect_err(bad);
            assert!(
                e.to_string().contains("suffixes are not upgrade targets"),
                "{e}"
            );
        }
    }

    #[test]
    fn cgroup_v2_from_1_35() {
        assert!(!Version::new(1, 34, 9).needs_cgroup_v2());
        assert!(Version::new(1, 35, 0).needs_cgroup_v2());
        assert!(Version::new(1, 36, 1).needs_cgroup_v2());
    }

    #[test]
    fn minor_distance() {
        let a = Version::new(1, 32, 4);
        assert_eq!(a.minors_to(Version::new(1, 35, 0)), 3);
        assert_eq!(Version::new(1, 35, 0).minors_to(a), -3);
    }
}
