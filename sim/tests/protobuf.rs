//! The protobuf bodies kubectl 1.33's generators really send (captured on the wire, in
//! `fixtures/protobuf/`), read into the JSON the same command prints with `--dry-run=client
//! -o json`: what the sim then creates.

use serde_json::{Value, json};
use upgraded_sim::proto;

fn read(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/protobuf/{name}.pb",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    proto::decode(&body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn kubectl_create_deployment() {
    // kubectl create deployment nginx --image=nginx --replicas=3 --port=80
    let d = read("deployment");
    assert_eq!(d["apiVersion"], "apps/v1");
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(
        d["metadata"],
        json!({"name": "nginx", "labels": {"app": "nginx"}})
    );
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["selector"],
        json!({"matchLabels": {"app": "nginx"}})
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        json!({"app": "nginx"})
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["name"], "nginx");
    assert_eq!(c["image"], "nginx");
    assert_eq!(c["ports"][0]["containerPort"], 80);
    assert_eq!(c["resources"], json!({}));
    assert_eq!(d["spec"]["strategy"], json!({}));
    // Go's zero time (creationTimestamp) and empty strings are left out, as its JSON does.
    assert!(d["metadata"].get("creationTimestamp").is_none());
    assert!(d["metadata"].get("namespace").is_none());
}

#[test]
fn kubectl_create_pdb() {
    // kubectl create pdb nginx-pdb --selector=app=nginx --min-available=2
    let b = read("pdb");
    assert_eq!(b["apiVersion"], "policy/v1");
    assert_eq!(b["kind"], "PodDisruptionBudget");
    assert_eq!(b["metadata"]["name"], "nginx-pdb");
    assert_eq!(b["spec"]["minAvailable"], 2, "an IntOrString of type int");
    assert!(b["spec"].get("maxUnavailable").is_none());
    assert_eq!(
        b["spec"]["selector"],
        json!({"matchLabels": {"app": "nginx"}})
    );
}

#[test]
fn kubectl_create_job() {
    // kubectl create job hello --image=busybox:1.36 -- sh -c echo
    let j = read("job");
    assert_eq!(j["apiVersion"], "batch/v1");
    assert_eq!(j["metadata"]["name"], "hello");
    let spec = &j["spec"]["template"]["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["containers"][0]["image"], "busybox:1.36");
    assert_eq!(
        spec["containers"][0]["command"],
        json!(["sh", "-c", "echo"])
    );
}

#[test]
fn kubectl_create_namespace_service_configmap() {
    let ns = read("namespace");
    assert_eq!(
        (ns["apiVersion"].as_str(), ns["kind"].as_str()),
        (Some("v1"), Some("Namespace"))
    );
    assert_eq!(ns["metadata"]["name"], "lab");

    // kubectl create service clusterip web --tcp=80:8080
    let svc = read("service");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["selector"], json!({"app": "web"}));
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["name"], "80-8080");
    assert_eq!(port["port"], 80);
    assert_eq!(port["protocol"], "TCP");
    assert_eq!(port["targetPort"], 8080);

    // kubectl create configmap cfg --from-literal=a=b --from-literal=c=d
    let cm = read("configmap");
    assert_eq!(cm["data"], json!({"a": "b", "c": "d"}));
}

#[test]
fn go_zeros_are_left_out_but_meaningful_zeros_kept() {
    let d = read("deployment");
    // Non-pointer Go fields the encoder always writes: absent in JSON, as Go's JSON leaves them.
    assert!(d["metadata"].get("generation").is_none());
    assert!(d["spec"].get("paused").is_none());
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["ports"][0], json!({"containerPort": 80}));
    assert!(c.get("tty").is_none());
    // A pointer the user set to zero stays: scaling to nothing is not the default of one.
    assert!(proto::ZERO_MEANS_SOMETHING.contains(&"replicas"));
    let svc = read("service");
    assert!(svc["spec"]["ports"][0].get("nodePort").is_none());
}
