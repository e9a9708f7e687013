//! Services: cluster IPs handed out from the service range (10.96.0.0/12, as kubeadm sets it:
//! `kubernetes` is 10.96.0.1 and CoreDNS's `kube-dns` 10.96.0.10), node ports from 30000-32767.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::model::namespaces::key_of;

/// The first address handed out to a Service that asks for none (below it, kubeadm's fixed
/// ones).
const FIRST_DYNAMIC: u32 = 11;
/// The service range's size (a /12).
const RANGE: u32 = 1 << 20;

pub fn cluster_ip(i: u32) -> String {
    format!("10.{}.{}.{}", 96 + (i >> 16), (i >> 8) & 255, i & 255)
}

/// Why a Service cannot have what it asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "spec.clusterIPs: Invalid value: []string{{\"{0}\"}}: failed to allocate IP {0}: provided IP is already allocated"
    )]
    Taken(String),
    #[error(
        "spec.clusterIPs: Invalid value: []string{{\"{0}\"}}: failed to allocate IP {0}: the provided IP ({0}) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
    )]
    OutOfRange(String),
    #[error("spec.ports[{0}].nodePort: Invalid value: {1}: provided port is already allocated")]
    PortTaken(usize, i32),
}

impl World {
    fn ips_in_use(&self) -> BTreeSet<String> {
        self.services
            .values()
            .filter_map(|s| s.spec.as_ref()?.cluster_ip.clone())
            .collect()
    }

    /// Stores a new Service (named, validated by the API layer): its cluster IP (the one asked
    /// for, or the next free), node ports for a NodePort or LoadBalancer Service.
    pub(crate) fn add_service(
        &mut self,
        mut svc: core::Service,
    ) -> Result<core::Service, ServiceError> {
        let used = self.ips_in_use();
        let spec = svc.spec.get_or_insert_with(Default::default);
        let asked = spec.cluster_ip.clone().filter(|ip| !ip.is_empty());
        match asked.as_deref() {
            Some("None") => {}
            Some(ip) => {
                let ok = ip.starts_with("10.") && {
                    let p: Vec<u32> = ip.split('.').filter_map(|x| x.parse().ok()).collect();
                    p.len() == 4 && (96..112).contains(&p[1])
                };
                if !ok {
                    return Err(ServiceError::OutOfRange(ip.to_string()));
                }
                if used.contains(ip) {
                    return Err(ServiceError::Taken(ip.to_string()));
                }
            }
            None => {
                let ip = (0..RANGE)
                    .map(|k| {
                        cluster_ip(
                            FIRST_DYNAMIC + (self.next_service_ip + k) % (RANGE - FIRST_DYNAMIC),
                        )
                    })
                    .find(|ip| !used.contains(ip))
                    .unwrap_or_else(|| cluster_ip(FIRST_DYNAMIC));
                self.next_service_ip += 1;
                spec.cluster_ip = Some(ip);
            }
        }
        spec.cluster_ips = spec.cluster_ip.clone().map(|ip| vec![ip]);
        let typ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
        if typ == "NodePort" || typ == "LoadBalancer" {
            let taken: BTreeSet<i32> = self
                .services
                .values()
                .filter_map(|s| s.spec.as_ref())
                .flat_map(|s| s.ports.iter().flatten())
                .filter_map(|p| p.node_port)
                .collect();
            let mut next = 30000;
            for (i, p) in spec.ports.iter_mut().flatten().enumerate() {
                match p.node_port.filter(|n| *n != 0) {
                    Some(n) if taken.contains(&n) => return Err(ServiceError::PortTaken(i, n)),
                    Some(_) => {}
                    None => {
                        while taken.contains(&next) {
                            next += 1;
                        }
                        p.node_port = Some(next);
                        next += 1;
                    }
                }
            }
        }
        // No load balancer on bare metal: a LoadBalancer Service's address stays pending.
        svc.status = Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus::default()),
            conditions: None,
        });
        self.stamp(&mut svc.metadata);
        svc.metadata.generation = None;
        let key = key_of(&svc.metadata);
        self.services.insert(key.clone(), svc.clone());
        self.noted(Res::Service, &key.0, &key.1, true);
        Ok(svc)
    }

    /// A Service kubeadm makes (`kubernetes`, `kube-dns`) at its fixed address.
    /// A ClusterIP Service in front of the pods labelled `app=APP` (scenarios and tests: an
    /// application an ingress routes to); its cluster IP.
    pub fn add_app_service(
        &mut self,
        namespace: &str,
        name: &str,
        app: &str,
        port: i32,
    ) -> Result<String, ServiceError> {
        let svc = core::Service {
            metadata: meta::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(core::ServiceSpec {
                selector: Some([("app".to_string(), app.to_string())].into()),
                ports: Some(vec![core::ServicePort {
                    port,
                    target_port: Some(IntOrString::Int(port)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let made = self.add_service(svc)?;
        Ok(made.spec.and_then(|s| s.cluster_ip).unwrap_or_default())
    }

    pub(crate) fn add_system_service(
        &mut self,
        namespace: &str,
        name: &str,
        ip: &str,
        labels: &[(&str, &str)],
        selector: Option<&[(&str, &str)]>,
        ports: &[(&str, &str, i32)],
    ) {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let svc = core::Service {
            metadata: meta::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(map(labels)),
                ..Default::default()
            },
            spec: Some(core::ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some(ip.into()),
                selector: selector.map(map),
                session_affinity: Some("None".into()),
                internal_traffic_policy: Some("Cluster".into()),
                ip_families: Some(vec!["IPv4".into()]),
                ip_family_policy: Some("SingleStack".into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, proto, port)| core::ServicePort {
                            name: Some(n.to_string()),
                            protocol: Some(proto.to_string()),
                            port: *port,
                            target_port: Some(IntOrString::Int(if *port == 443 {
                                6443
                            } else {
                                *port
                            })),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        };
        let _ = self.add_service(svc);
    }

    /// What every kubeadm cluster has before anything is deployed: its namespaces and the
    /// `kubernetes` Service.
    pub(crate) fn bootstrap(&mut self) {
        for ns in namespaces::SYSTEM {
            self.ensure_namespace(ns);
        }
        self.add_system_service(
            "default",
            "kubernetes",
            "10.96.0.1",
            &[("component", "apiserver"), ("provider", "kubernetes")],
            None,
            &[("https", "TCP", 443)],
        );
    }
}
