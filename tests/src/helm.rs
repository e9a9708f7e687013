//! Helm 3 release Secrets as Helm writes them, for the tests of the removed-API gate.

use std::io::Write;

use base64::Engine;

/// A deployed release's Secret as `kubectl get secret -o json` shows it: the release's JSON
/// (`manifest` holding its objects), gzipped, base64 (Helm's encoding), and base64 again
/// over `data` (the API's).
pub fn release_secret(namespace: &str, name: &str, manifest: &str) -> serde_json::Value {
    let release = serde_json::json!({
        "name": name, "namespace": namespace, "version": 1,
        "info": {"status": "deployed"}, "manifest": manifest,
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(release.to_string().as_bytes())
        .expect("gzip to memory");
    let b64 = base64::engine::general_purpose::STANDARD;
    let helm = b64.encode(gz.finish().expect("gzip to memory"));
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {
            "namespace": namespace, "name": format!("sh.helm.release.v1.{name}.v1"),
            "labels": {"owner": "helm", "status": "deployed", "name": name, "version": "1"},
        },
        "data": {"release": b64.encode(helm)},
    })
}

/// A chart that still ships a flowcontrol v1beta3 FlowSchema (removed in 1.32).
pub const FLOWSCHEMA_V1BETA3: &str = "---\n# Source: traffic/templates/flowschema.yaml\napiVersion: flowcontrol.apiserver.k8s.io/v1beta3\nkind: FlowSchema\nmetadata:\n  name: batch\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: traffic\n";
