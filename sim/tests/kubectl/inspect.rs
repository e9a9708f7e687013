//! The guide's inspection commands and the writes an operator makes by hand, on the `kind`
//! scenario: events, top, namespaces, custom columns, the JSON inventory, field selectors,
//! Jobs with `wait`, `apply -f` twice, delete, and the apiserver's refusals.

use serde_json::Value;

use super::*;

/// The cells of a table's header, split where kubectl puts two or more spaces.
fn header(out: &str) -> Vec<String> {
    out.lines()
        .next()
        .unwrap_or("")
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
        resources:
          requests: {cpu: 100m, memory: 64Mi}
        volumeMounts:
        - name: data
          mountPath: /usr/share/nginx/html
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: data}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
  namespace: shop
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app: web}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: shop
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
"#;

/// The resourceVersion of every object the manifest made.
fn versions(env: &Env) -> Vec<(String, String)> {
    let out = env.ok(&[
        "get",
        "namespace/shop",
        "deployment/web",
        "pdb/web",
        "service/web",
        "pvc/data",
        "-n",
        "shop",
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&out).expect("a List");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| {
            (
                format!("{}/{}", o["kind"], o["metadata"]["name"]),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn the_guides_inspection_commands_show_what_happened() {
    for k in kubectls() {
        let env = Env::of("kind", &k);
        env.ok(&[
            "create",
            "deployment",
            "nginx",
            "--image=nginx",
            "--replicas=3",
        ]);
        env.ok(&["rollout", "status", "deployment/nginx", "--timeout=60s"]);
        let victim = env
            .ok(&[
                "get",
                "pods",
                "-l",
                "app=nginx",
                "-o",
                "jsonpath={.items[0].metadata.name}",
            ])
            .trim()
            .to_string();
        let out = env.ok(&["delete", "pod", &victim]);
        assert_eq!(out.trim(), format!("pod \"{victim}\" deleted"));
        env.ok(&["rollout", "status", "deployment/nginx", "--timeout=60s"]);

        // Events: the controllers', the scheduler's and the kubelets'.
        let out = env.ok(&["get", "events"]);
        assert_eq!(
            header(&out),
            ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            "{out}"
        );
        for (reason, object) in [
            ("ScalingReplicaSet", "deployment/nginx"),
            ("SuccessfulCreate", "replicaset/nginx-"),
            ("Scheduled", "pod/nginx-"),
            ("Started", "pod/nginx-"),
            ("Killing", &format!("pod/{victim}")),
        ] {
            assert!(
                out.lines()
                    .any(|l| l.contains(&format!(" {reason} ")) && l.contains(object)),
                "{reason} of {object}: {out}"
            );
        }
        let out = env.ok(&["get", "events", "-A", "--field-selector", "reason=Killing"]);
        let rows: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "{out}");
        assert!(rows[0].starts_with("default "), "{out}");
        let out = env.ok(&["events", "--for", &format!("pod/{victim}")]);
        assert!(out.contains("Stopping container nginx"), "{out}");

        // top, from the metrics API.
        let out = env.ok(&["top", "nodes"]);
        assert_eq!(
            header(&out),
            ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
            "{out}"
        );
        assert_eq!(out.lines().count(), 4, "{out}");
        let out = env.ok(&["top", "pods", "-l", "app=nginx"]);
        assert_eq!(out.lines().count(), 4, "{out}");

        // Namespaces.
        let out = env.ok(&["get", "ns"]);
        let names: Vec<&str> = out
            .lines()
            .skip(1)
            .filter(|l| l.contains(" Active "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(
            names,
            [
                "default",
                "kube-node-lease",
                "kube-public",
                "kube-system",
                "local-path-storage"
            ],
            "{out}"
        );

        // Custom columns, the JSON inventory and a field selector agree with each other.
        let out = env.ok(&[
            "get",
            "pods",
            "-A",
            "-o",
            "custom-columns=NS:.metadata.namespace,NAME:.metadata.name,NODE:.spec.nodeName",
        ]);
        assert_eq!(header(&out), ["NS", "NAME", "NODE"]);
        let columns: Vec<Vec<&str>> = out
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        let inventory: Value =
            serde_json::from_str(&env.ok(&["get", "pods", "-A", "-o", "json"])).expect("JSON");
        let items = inventory["items"].as_array().expect("items");
        assert_eq!(items.len(), columns.len());
        let cp = "upgrade-lab-control-plane";
        let on_cp = columns.iter().filter(|c| c.get(2) == Some(&cp)).count();
        let out = env.ok(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("spec.nodeName={cp}"),
            "-o",
            "name",
        ]);
        assert_eq!(out.lines().count(), on_cp, "{out}");
        assert!(out.contains(&format!("pod/etcd-{cp}")), "{out}");

        // The apps tables carry the apiserver's columns, -o wide its extra ones.
        let out = env.ok(&["get", "deploy", "-A", "-o", "wide"]);
        assert_eq!(
            header(&out),
            [
                "NAMESPACE",
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR"
            ],
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("default ") && l.contains(" 3/3 ")),
            "{out}"
        );
        let out = env.ok(&["get", "ds", "-n", "kube-system"]);
        assert_eq!(
            header(&out),
            [
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
                "AGE"
            ],
            "{out}"
        );

        // A Job runs to completion; wait follows it through a watch.
        let out = env.ok(&[
            "create",
            "job",
            "hello",
            "--image=busybox",
            "--",
            "echo",
            "hi",
        ]);
        assert_eq!(out.trim(), "job.batch/hello created");
        let out = env.ok(&[
            "wait",
            "--for=condition=complete",
            "job/hello",
            "--timeout=60s",
        ]);
        assert_eq!(out.trim(), "job.batch/hello condition met");
        let out = env.ok(&["get", "job", "hello"]);
        assert_eq!(
            header(&out),
            ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
            "{out}"
        );
        assert!(out.contains(" Complete ") && out.contains(" 1/1 "), "{out}");

        // Delete goes through the garbage collector: the ReplicaSet and pods follow.
        let out = env.ok(&["delete", "deployment", "nginx", "--wait=true"]);
        assert_eq!(out.trim(), "deployment.apps \"nginx\" deleted");
        let gone = env.ok(&[
            "wait",
            "--for=delete",
            "pods",
            "-l",
            "app=nginx",
            "--timeout=60s",
        ]);
        assert!(!gone.contains("error"), "{gone}");
        let out = env.run(&["get", "rs", "-l", "app=nginx"]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("No resources found"),
            "{out:?}"
        );
    }
}

#[test]
fn apply_twice_changes_nothing_the_second_time() {
    for k in kubectls() {
        let env = Env::of("kind", &k);
        let file = env.dir.path().join("shop.yaml");
        std::fs::write(&file, MANIFEST).expect("manifest written");
        let path = file.to_str().expect("utf-8 path");
        let out = env.ok(&["apply", "-f", path]);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "namespace/shop created",
                "deployment.apps/web created",
                "poddisruptionbudget.policy/web created",
                "service/web created",
                "persistentvolumeclaim/data created"
            ],
            "{out}"
        );
        env.ok(&[
            "rollout",
            "status",
            "-n",
            "shop",
            "deployment/web",
            "--timeout=60s",
        ]);
        // `standard` binds when the first pod is scheduled (WaitForFirstConsumer), and the
        // local volume then holds every pod that mounts it on that pod's node.
        let out = env.ok(&[
            "wait",
            "-n",
            "shop",
            "--for=jsonpath={.status.phase}=Bound",
            "pvc/data",
            "--timeout=60s",
        ]);
        assert!(out.contains("condition met"), "{out}");
        let web_nodes = |env: &Env| {
            let out = env.ok(&[
                "get",
                "pods",
                "-n",
                "shop",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].spec.nodeName}",
            ]);
            let mut nodes: Vec<String> = out.split_whitespace().map(str::to_string).collect();
            nodes.dedup();
            nodes
        };
        assert_eq!(web_nodes(&env).len(), 1, "the volume holds web to one node");
        let before = versions(&env);
        let out = env.ok(&["apply", "-f", path]);
        // kubectl reports a PDB "configured" on a real apiserver too (its selector is replaced,
        // not merged, in the patch it computes); the server writes nothing either way.
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "namespace/shop unchanged",
                "deployment.apps/web unchanged",
                "poddisruptionbudget.policy/web configured",
                "service/web unchanged",
                "persistentvolumeclaim/data unchanged"
            ],
            "{out}"
        );
        assert_eq!(versions(&env), before, "the second apply wrote nothing");

        // A change is applied as a patch.
        let changed = MANIFEST.replace("replicas: 2", "replicas: 3");
        std::fs::write(&file, changed).expect("manifest written");
        let out = env.ok(&["apply", "-f", path]);
        assert!(out.contains("deployment.apps/web configured"), "{out}");
        let replicas = env.ok(&[
            "get",
            "-n",
            "shop",
            "deployment/web",
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        assert_eq!(replicas, "3");
        env.ok(&[
            "rollout",
            "status",
            "-n",
            "shop",
            "deployment/web",
            "--timeout=60s",
        ]);
        assert_eq!(web_nodes(&env).len(), 1, "the third pod joins the volume");
        let out = env.ok(&["get", "pvc", "-n", "shop"]);
        assert!(
            out.contains(" Bound ") && out.contains(" standard "),
            "{out}"
        );

        // label, then deleting the namespace deletes what is in it.
        let out = env.ok(&["label", "-n", "shop", "deployment/web", "tier=front"]);
        assert_eq!(out.trim(), "deployment.apps/web labeled");
        let out = env.ok(&["delete", "namespace", "shop"]);
        assert_eq!(out.trim(), "namespace \"shop\" deleted");
        let out = env.run(&["get", "all", "-n", "shop"]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("No resources found in shop namespace"),
            "{out:?}"
        );
    }
}

#[test]
fn the_apiserver_refuses_what_it_refuses() {
    for k in kubectls() {
        let env = Env::of("kind", &k);
        let refusal = |args: &[&str]| {
            let out = env.run(args);
            assert!(!out.status.success(), "{args:?} succeeded");
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let both = env.dir.path().join("both.yaml");
        std::fs::write(
            &both,
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: both\nspec:\n  minAvailable: 1\n  maxUnavailable: 1\n  selector:\n    matchLabels: {app: x}\n",
        )
        .expect("written");
        let err = refusal(&["apply", "-f", both.to_str().expect("utf-8")]);
        assert!(
            err.contains("minAvailable and maxUnavailable cannot be both set"),
            "{err}"
        );
        let err = refusal(&["create", "deployment", "Web_1", "--image=nginx"]);
        assert!(
            err.contains(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"
            ),
            "{err}"
        );
        let err = refusal(&[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "-n",
            "nowhere",
        ]);
        assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
        env.ok(&["create", "configmap", "settings", "--from-literal=a=1"]);
        let err = refusal(&["create", "configmap", "settings", "--from-literal=a=1"]);
        assert!(
            err.contains("configmaps \"settings\" already exists"),
            "{err}"
        );
        let err = refusal(&["delete", "pod", "no-such-pod"]);
        assert!(err.contains("pods \"no-such-pod\" not found"), "{err}");
    }
}
