//! What is on a machine's disk that kubeadm and the kubelet read and write, and the host
//! facts a node agent reports: the kubelet config (`/var/lib/kubelet/config.yaml`, which
//! `/configz` serves), `kubeadm-flags.env`, `instance-config.yaml`, kubelet.conf's server,
//! `kubelet.conf.d/`, containerd's `config.toml`, swap, package holds and a pending reboot.
//!
//! kubeadm's upgrade regenerates the kubelet config from the cluster's (a key edited by hand
//! on the node is lost) and, from [`NODE_LOCAL_CRI_FROM`], moves the CRI socket out of the
//! node's annotation and the flags file into `instance-config.yaml`. The preflight's copies
//! are kept by the kubelet version they belong to, and a rollback puts them back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use upgraded_events::version::Version;

use super::{ModelError, World};

/// The node annotation where kubeadm kept the CRI socket before [`NODE_LOCAL_CRI_FROM`].
pub const CRI_SOCKET_ANNOTATION: &str = "kubeadm.alpha.kubernetes.io/cri-socket";
/// containerd's socket, as kubeadm writes it.
pub const CRI_SOCKET: &str = "unix:///var/run/containerd/containerd.sock";
/// The minor from which `kubeadm upgrade` writes `instance-config.yaml`, drops
/// `--container-runtime-endpoint` from `kubeadm-flags.env` and removes the node's
/// [`CRI_SOCKET_ANNOTATION`].
pub const NODE_LOCAL_CRI_FROM: u16 = 34;

/// The files kubeadm and the kubelet use, as a node's preflight copies them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletFiles {
    /// `/var/lib/kubelet/config.yaml`'s top-level keys.
    pub config: BTreeMap<String, Value>,
    /// `kubeadm-flags.env`'s `KUBELET_KUBEADM_ARGS`, one flag per entry (`--name=value`).
    pub flags: Vec<String>,
    /// `/var/lib/kubelet/instance-config.yaml`'s `containerRuntimeEndpoint`, when present.
    pub instance_config: Option<String>,
    /// `server:` of `/etc/kubernetes/kubelet.conf`.
    pub kubelet_conf_server: String,
    /// `/etc/kubernetes/kubelet.conf.d/`: file name → contents.
    pub conf_d: BTreeMap<String, String>,
}

/// A machine's host state beyond its packages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeHost {
    pub files: KubeletFiles,
    /// `/etc/containerd/config.toml`.
    pub containerd_config: String,
    /// `containerd --version`'s version.
    pub containerd_version: String,
    pub swap: bool,
    /// Packages held (`apt-mark showhold`).
    pub held: Vec<String>,
    /// `/var/run/reboot-required` exists.
    pub reboot_required: bool,
    /// The newest installed kernel when it is not the running one.
    pub installed_kernel: Option<String>,
    /// Copies by name (the preflight's by the kubelet version they were taken at), each
    /// kept once.
    pub saved: BTreeMap<String, KubeletFiles>,
}

/// The kubelet config kubeadm writes for `v` from the cluster's (what it regenerates on
/// every upgrade; a node's own edits are not in it).
pub fn kubeadm_kubelet_config(_v: Version) -> BTreeMap<String, Value> {
    let v = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "systemd",
        "cpuManagerPolicy": "none",
        "topologyManagerPolicy": "none",
        "maxPods": 110,
        "evictionHard": {
            "imagefs.available": "15%", "memory.available": "100Mi",
            "nodefs.available": "10%", "nodefs.inodesFree": "5%"
        },
        "featureGates": {},
        "staticPodPath": "/etc/kubernetes/manifests",
        "rotateCertificates": true,
    });
    match v {
        Value::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

impl NodeHost {
    /// A machine kubeadm joined at `v`, running containerd 1.7.
    pub fn kubeadm(v: Version) -> NodeHost {
        let mut flags = vec!["--pod-infra-container-image=registry.k8s.io/pause:3.10".into()];
        let mut instance_config = None;
        if v.minor >= NODE_LOCAL_CRI_FROM {
            instance_config = Some(CRI_SOCKET.to_string());
        } else {
            flags.insert(0, format!("--container-runtime-endpoint={CRI_SOCKET}"));
        }
        NodeHost {
            files: KubeletFiles {
                config: kubeadm_kubelet_config(v),
                flags,
                instance_config,
                kubelet_conf_server: "https://10.0.0.10:6443".into(),
                conf_d: BTreeMap::new(),
            },
            containerd_config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n".into(),
            containerd_version: "1.7.24".into(),
            swap: false,
            held: vec!["kubeadm".into(), "kubectl".into(), "kubelet".into()],
            reboot_required: false,
            installed_kernel: None,
            saved: BTreeMap::new(),
        }
    }

    /// `kubeadm upgrade apply|node` to `v`: the kubelet config regenerated (hand edits lost),
    /// and from [`NODE_LOCAL_CRI_FROM`] the CRI socket moved to `instance-config.yaml`.
    /// Whether the node's CRI-socket annotation goes too.
    fn kubeadm_upgrade(&mut self, v: Version) -> bool {
        self.files.config = kubeadm_kubelet_config(v);
        if v.minor < NODE_LOCAL_CRI_FROM {
            return false;
        }
        self.files
            .flags
            .retain(|f| !f.starts_with("--container-runtime-endpoint"));
        self.files.instance_config = Some(CRI_SOCKET.to_string());
        true
    }
}

impl World {
    /// kubeadm's kubelet phase on `node` (both `upgrade apply` and `upgrade node` run it).
    pub fn kubeadm_kubelet_phase(&mut self, node: &str, v: Version) -> Result<(), ModelError> {
        self.edit_node(node, |n, _| {
            if n.host.kubeadm_upgrade(v) {
                n.annotations.remove(CRI_SOCKET_ANNOTATION);
            }
            Ok(())
        })
    }

    /// A change to a machine's host state (a test's or a rehearsal fault's edit).
    pub fn edit_host(
        &mut self,
        node: &str,
        f: impl FnOnce(&mut NodeHost),
    ) -> Result<(), ModelError> {
        self.edit_node(node, |n, _| {
            f(&mut n.host);
            Ok(())
        })
    }

    /// A copy of the kubelet's files under `name` (the preflight's: the kubelet version; once:
    /// a copy that exists is kept).
    pub fn save_kubelet_files(&mut self, node: &str, name: &str) -> Result<(), ModelError> {
        self.edit_host(node, |h| {
            let files = h.files.clone();
            h.saved.entry(name.to_string()).or_insert(files);
        })
    }

    /// A rollback's restore of the copy taken at `version`; an error when there is none.
    pub fn restore_kubelet_files(&mut self, node: &str, version: &str) -> Result<(), ModelError> {
        let saved = self
            .nodes
            .get(node)
            .ok_or_else(|| super::not_found("nodes", node))?
            .host
            .saved
            .get(version)
            .cloned()
            .ok_or_else(|| {
                ModelError::Invalid(format!("node {node:?} kept no kubelet files of {version}"))
            })?;
        self.edit_host(node, |h| h.files = saved)
    }

    /// What the node's kubelet serves at `/configz`.
    pub fn configz(&self, node: &str) -> Result<Value, ModelError> {
        let n = self
            .nodes
            .get(node)
            .ok_or_else(|| super::not_found("nodes", node))?;
        if n.down || !n.ready {
            return Err(ModelError::Unavailable(format!(
                "the kubelet on {node:?} does not answer"
            )));
        }
        let config: serde_json::Map<String, Value> =
            n.host.files.config.clone().into_iter().collect();
        Ok(json!({ "kubeletconfig": config }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    #[test]
    fn kubeadm_to_1_34_moves_the_cri_socket_and_drops_hand_edits() {
        let mut h = NodeHost::kubeadm(v("v1.33.5"));
        assert!(h.files.flags[0].starts_with("--container-runtime-endpoint"));
        h.files
            .config
            .insert("reservedSystemCPUs".into(), json!("0-1"));
        assert!(
            !h.kubeadm_upgrade(v("v1.33.6")),
            "a patch keeps the annotation"
        );
        assert!(!h.files.config.contains_key("reservedSystemCPUs"));
        assert!(h.kubeadm_upgrade(v("v1.34.6")));
        assert_eq!(h.files.instance_config.as_deref(), Some(CRI_SOCKET));
        assert!(
            h.files
                .flags
                .iter()
                .all(|f| !f.starts_with("--container-runtime-endpoint"))
        );
    }
}
