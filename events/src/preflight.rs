//! A node's preflight verdict, from the facts its script reported: the machine checks every
//! upgrade needs (a table, one row per check, whatever the target), then the version-change
//! rules for the target (`rules`). The daemon runs the script and refuses the node with what
//! this finds; a person has to change the machine, so it is never retried.

use crate::Version;
use crate::facts::Facts;

/// What the policy allows of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The fullest `/var/lib/kubelet` may be, in percent.
    pub max_disk_used_percent: u32,
}

/// One machine check: a stable name and what it finds wrong (nothing: passed).
#[derive(Debug, Clone, Copy)]
pub struct MachineCheck {
    pub id: &'static str,
    pub finds: fn(&Facts, Version, Limits) -> Option<String>,
}

fn fact<'a>(facts: &'a Facts, key: &str) -> &'a str {
    facts.get(key).map_or("", |s| s.trim())
}

fn cgroup_unread(f: &Facts, target: Version, _: Limits) -> Option<String> {
    (target.needs_cgroup_v2() && fact(f, "cgroup").is_empty())
        .then(|| "the cgroup filesystem could not be read".into())
}

fn disk(f: &Facts, _: Version, l: Limits) -> Option<String> {
    match fact(f, "disk_used_percent").parse::<u32>() {
        Ok(p) if p > l.max_disk_used_percent => Some(format!(
            "/var/lib/kubelet is {p}% full (the policy allows {}%); image pulls during the upgrade need room",
            l.max_disk_used_percent
        )),
        Ok(_) => None,
        Err(_) => Some("free disk on /var/lib/kubelet could not be read".into()),
    }
}

fn runtime(f: &Facts, _: Version, _: Limits) -> Option<String> {
    (fact(f, "runtime") != "ok")
        .then(|| "the container runtime does not answer `crictl info`".into())
}

fn swap(f: &Facts, _: Version, _: Limits) -> Option<String> {
    match fact(f, "swap_devices") {
        "0" => None,
        "" => Some("whether swap is on could not be read".into()),
        n => Some(format!(
            "{n} swap device(s) active; the kubelet fails to start with swap on unless configured for it"
        )),
    }
}

fn repository(f: &Facts, _: Version, _: Limits) -> Option<String> {
    (fact(f, "repository") != "ok").then(|| "the package repository cannot be refreshed".into())
}

/// The machine checks, in the order a refusal names them.
pub const MACHINE_CHECKS: &[MachineCheck] = &[
    MachineCheck {
        id: "cgroup-readable",
        finds: cgroup_unread,
    },
    MachineCheck {
        id: "disk",
        finds: disk,
    },
    MachineCheck {
        id: "container-runtime",
        finds: runtime,
    },
    MachineCheck {
        id: "swap-off",
        finds: swap,
    },
    MachineCheck {
        id: "package-repository",
        finds: repository,
    },
];

/// Everything that refuses the node for `target`: the version-change rules' findings first
/// (each with its rule and fix), then the machine checks'. Empty: the node may go.
pub fn refusals(target: Version, facts: &Facts, limits: Limits) -> Vec<String> {
    let mut out: Vec<String> = crate::rules::node_findings(target, facts)
        .into_iter()
        .map(|f| format!("{} ({}: {})", f.what, f.rule, f.fix))
        .collect();
    out.extend(
        MACHINE_CHECKS
            .iter()
            .filter_map(|c| (c.finds)(facts, target, limits)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_disk_used_percent: 85,
    };

    fn healthy() -> Facts {
        [
            ("cgroup", "cgroup2fs"),
            ("disk_used_percent", "40"),
            ("runtime", "ok"),
            ("swap_devices", "0"),
            ("repository", "ok"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    /// One broken fact per row: only that row refuses, naming what it saw.
    #[test]
    fn each_machine_check_refuses_its_own_fault() {
        let rows: &[(&str, &str, &str, &str)] = &[
            ("cgroup-readable", "cgroup", "", "could not be read"),
            (
                "disk",
                "disk_used_percent",
                "91",
                "91% full (the policy allows 85%)",
            ),
            ("container-runtime", "runtime", "down", "crictl info"),
            ("swap-off", "swap_devices", "2", "2 swap device(s)"),
            (
                "package-repository",
                "repository",
                "unreachable",
                "cannot be refreshed",
            ),
        ];
        assert_eq!(rows.len(), MACHINE_CHECKS.len(), "a test per row");
        assert!(refusals(v("v1.35.3"), &healthy(), LIMITS).is_empty());
        for (id, key, value, says) in rows {
            let mut f = healthy();
            f.insert(key.to_string(), value.to_string());
            let check = MACHINE_CHECKS.iter().find(|c| c.id == *id).expect("row");
            let found = (check.finds)(&f, v("v1.35.3"), LIMITS).expect("refused");
            assert!(found.contains(says), "{id}: {found}");
            assert_eq!(refusals(v("v1.35.3"), &f, LIMITS).len(), 1, "{id} alone");
        }
        // An unreadable disk is refused, not passed.
        let mut f = healthy();
        f.remove("disk_used_percent");
        assert_eq!(refusals(v("v1.34.6"), &f, LIMITS).len(), 1);
        // The cgroup fact matters only for targets that need cgroup v2.
        let mut f = healthy();
        f.remove("cgroup");
        assert!(refusals(v("v1.34.6"), &f, LIMITS).is_empty());
    }

    #[test]
    fn the_version_rules_come_first_with_their_fix() {
        let mut f = healthy();
        f.insert("cgroup".into(), "tmpfs".into());
        f.insert("swap_devices".into(), "1".into());
        let r = refusals(v("v1.35.3"), &f, LIMITS);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].contains("(cgroup-v2: boot the machine"), "{}", r[0]);
        assert!(r[1].contains("swap"), "{}", r[1]);
    }
}
