//! Which patch release to use for each minor, and how package versions are spelled.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use upgraded_events::Version;

/// Latest patch per Kubernetes 1.x minor, as known when this release was cut (2026-11).
/// The policy's `catalog.patches` adds newer ones or replaces the list.
const BUILTIN: &[(u16, u16)] = &[
    (28, 15),
    (29, 15),
    (30, 14),
    (31, 14),
    (32, 11),
    (33, 7),
    (34, 6),
    (35, 3),
];

/// `format` with `{version}` replaced by `1.35.3`.
pub fn package_version(format: &str, v: Version) -> String {
    format.replace("{version}", &format!("{}.{}.{}", v.major, v.minor, v.patch))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// Kubernetes 1.MINOR → latest patch to use.
    pub patches: BTreeMap<u16, u16>,
    /// `{version}` stands for `1.35.3`.
    pub package_format: String,
}

impl Catalog {
    pub fn builtin() -> Catalog {
        Catalog {
            patches: BUILTIN.iter().copied().collect(),
            package_format: "{version}-1.1".into(),
        }
    }

    /// The release to use for minor `1.minor`, when known.
    pub fn latest(&self, major: u16, minor: u16) -> Option<Version> {
        (major == 1)
            .then(|| self.patches.get(&minor))
            .flatten()
            .map(|p| Version::new(1, minor, *p))
    }

    /// Is `v` a release the catalog knows (its minor listed, patch not beyond the latest)?
    pub fn knows(&self, v: Version) -> bool {
        self.latest(v.major, v.minor)
            .is_some_and(|l| v.patch <= l.patch)
    }

    /// `1.35.3-1.1`, the string given to apt-get/dnf.
    pub fn package_version(&self, v: Version) -> String {
        package_version(&self.package_format, v)
    }

    pub fn parse_minor(s: &str) -> Result<u16, String> {
        let t = s.trim_start_matches('v');
        match t.split_once('.') {
            Some(("1", m)) => m
                .parse()
                .map_err(|_| format!("{s:?}: expected a minor like \"1.35\"")),
            _ => Err(format!(
                "{s:?}: expected a Kubernetes 1.x minor like \"1.35\""
            )),
        }
    }

    /// A package format goes into commands: only version-string characters.
    pub fn check_format(f: &str) -> Result<(), String> {
        if !f.contains("{version}") {
            return Err(format!(
                "{f:?} must contain {{version}}, like {{version}}-1.1"
            ));
        }
        let rest = f.replace("{version}", "");
        if rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~_-:".contains(c))
        {
            Ok(())
        } else {
            Err(format!(
                "{f:?} may hold {{version}} and only letters, digits and . + ~ _ - :"
            ))
        }
    }
}
