//! Create, update and delete for each kind the sim serves: decode, default, validate as the
//! apiserver does, then hand the object to the model. An update keeps what the server owns
//! (uid, creation time, status) and refuses what may not change (a workload's selector, a Job's
//! template, a Service's cluster IP, a bound claim's spec, an immutable ConfigMap's data).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::api::storage::v1 as storage;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use upgraded_events::inventory::{IntOrPercent, LabelSelector, Labels, SelectorRequirement};

use super::pods::{default_spec, validate_spec};
use super::{
    ApiError, FieldError, FieldValidation, check_version, create_meta, decode, invalid, quoted,
};
use crate::clock::Millis;
use crate::model::{
    Given, JobStatus, Kind, Pdb, Propagation, SimJob, Workload, WorkloadChange, WorkloadStatus,
    World, template,
};
use crate::resource::Res;

/// `deleteOptions` (from the body or the query).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `None`: the resource's default (Background, or Orphan for a Job, as batch/v1 keeps it).
    pub propagation: Option<Propagation>,
    pub grace_ms: Option<Millis>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// What a create or update answers: the object as stored, and warnings to send.
pub type Answer = Result<(Value, Vec<String>), ApiError>;

fn labels_of(m: &meta::ObjectMeta) -> Labels {
    m.labels.clone().unwrap_or_default()
}

fn annotations_of(m: &meta::ObjectMeta) -> Labels {
    m.annotations.clone().unwrap_or_default()
}

/// A selector as the model matches it.
fn selector(s: &meta::LabelSelector) -> LabelSelector {
    LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .map(|r| SelectorRequirement {
                key: r.key.clone(),
                operator: r.operator.clone(),
                values: r.values.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// A map as Go's `%#v` prints it: `map[string]string{"app":"x"}`.
fn go_map(m: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}:{}", quoted(k), quoted(v)))
        .collect();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

fn go_selector(s: &meta::LabelSelector) -> String {
    let labels = s
        .match_labels
        .as_ref()
        .map_or("map[string]string(nil)".to_string(), go_map);
    let exprs = if s.match_expressions.as_ref().is_none_or(Vec::is_empty) {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        "[]v1.LabelSelectorRequirement{...}".to_string()
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

fn not_found(res: Res, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: res.qualified(),
        name: name.to_string(),
    }
}

fn exists(res: Res, name: &str) -> ApiError {
    ApiError::AlreadyExists {
        resource: res.qualified(),
        name: name.to_string(),
    }
}

fn object_json(w: &World, res: Res, ns: &str, name: &str) -> Result<Value, ApiError> {
    crate::kube::object(w, res, ns, name).ok_or_else(|| not_found(res, name))
}

/// The update's body must name the object of the URL.
fn same_name(m: &meta::ObjectMeta, name: &str) -> Result<(), ApiError> {
    match m.name.as_deref() {
        Some(n) if n != name => Err(ApiError::BadRequest(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

fn same_namespace(m: &meta::ObjectMeta, ns: &str) -> Result<(), ApiError> {
    match m.namespace.as_deref() {
        Some(n) if !n.is_empty() && n != ns => Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        _ => Ok(()),
    }
}

fn immutable(field: &str, value: String) -> FieldError {
    FieldError::invalid(field, value, "field is immutable")
}

fn spec_error(e: template::SpecError) -> FieldError {
    FieldError::invalid(e.field, quoted(&e.value), e.detail)
}

fn status_success(res: Res, name: &str, uid: Option<&str>) -> Value {
    let d = res.def();
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": d.group, "kind": d.plural, "uid": uid.unwrap_or_default()},
    })
}

/// `POST` a new object of `res` in `ns`.
pub fn create(
    w: &mut World,
    res: Res,
    ns: Option<&str>,
    body: &Value,
    fv: FieldValidation,
) -> Answer {
    let ns_str = ns.unwrap_or_default();
    match res {
        Res::Namespace => {
            let (mut o, warn): (core::Namespace, _) = decode(res, body, fv)?;
            let errors = create_meta(w, res, ns, &mut o.metadata)?;
            let name = o.metadata.name.clone().unwrap_or_default();
            invalid(res, &name, errors)?;
            if w.namespaces.contains_key(&name) {
                return Err(exists(res, &name));
            }
            w.add_namespace(o);
            Ok((object_json(w, res, "", &name)?, warn))
        }
        Res::Pod => create_pod(w, ns_str, body, fv),
        Res::Deployment | Res::StatefulSet | Res::DaemonSet | Res::ReplicaSet => {
            create_workload(w, res, ns_str, body, fv)
        }
        Res::Job => create_job(w, ns_str, body, fv),
        Res::Budget => put_budget(w, ns_str, None, body, fv),
        Res::Service => create_service(w, ns_str, body, fv),
        Res::Secret => {
            let (mut o, warn): (core::Secret, _) = decode(res, body, fv)?;
            let mut errors = create_meta(w, res, ns, &mut o.metadata)?;
            let name = o.metadata.name.clone().unwrap_or_default();
            fold_string_data(&mut o);
            errors.extend(secret_keys(&o));
            invalid(res, &name, errors)?;
            if w.secrets.contains_key(&(ns_str.to_string(), name.clone())) {
                return Err(exists(res, &name));
            }
            if o.type_.is_none() {
                o.type_ = Some("Opaque".into());
            }
            w.add_secret(o);
            w.tick();
            Ok((object_json(w, res, ns_str, &name)?, warn))
        }
        Res::ConfigMap => {
            let (mut o, warn): (core::ConfigMap, _) = decode(res, body, fv)?;
            let mut errors = create_meta(w, res, ns, &mut o.metadata)?;
            let name = o.metadata.name.clone().unwrap_or_default();
            errors.extend(config_keys(&o));
            invalid(res, &name, errors)?;
            if w.config_maps
                .contains_key(&(ns_str.to_string(), name.clone()))
            {
                return Err(exists(res, &name));
            }
            w.add_config_map(o);
            w.tick();
            Ok((object_json(w, res, ns_str, &name)?, warn))
        }
        Res::Claim => create_claim(w, ns_str, body, fv),
        Res::Volume => {
            let (mut o, warn): (core::PersistentVolume, _) = decode(res, body, fv)?;
            let mut errors = create_meta(w, res, None, &mut o.metadata)?;
            let name = o.metadata.name.clone().unwrap_or_default();
            let spec = o.spec.clone().unwrap_or_default();
            if spec
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .is_none()
            {
                errors.push(FieldError::required("spec.capacity", ""));
            }
            if spec.access_modes.as_ref().is_none_or(Vec::is_empty) {
                errors.push(FieldError::required("spec.accessModes", ""));
            }
            invalid(res, &name, errors)?;
            if w.volumes.contains_key(&name) {
                return Err(exists(res, &name));
            }
            if let Some(s) = o.spec.as_mut() {
                s.persistent_volume_reclaim_policy
                    .get_or_insert_with(|| "Retain".into());
                s.volume_mode.get_or_insert_with(|| "Filesystem".into());
            }
            w.add_api_volume(o);
            w.tick();
            Ok((object_json(w, res, "", &name)?, warn))
        }
        Res::StorageClass => {
            let (mut o, warn): (storage::StorageClass, _) = decode(res, body, fv)?;
            let mut errors = create_meta(w, res, None, &mut o.metadata)?;
            let name = o.metadata.name.clone().unwrap_or_default();
            if o.provisioner.is_empty() {
                errors.push(FieldError::required("provisioner", ""));
            }
            if let Some(m) = o.volume_binding_mode.as_deref()
                && !["Immediate", "WaitForFirstConsumer"].contains(&m)
            {
                errors.push(FieldError::not_supported(
                    "volumeBindingMode",
                    m,
                    &["Immediate", "WaitForFirstConsumer"],
                ));
            }
            invalid(res, &name, errors)?;
            if w.storage_classes.contains_key(&name) {
                return Err(exists(res, &name));
            }
            o.reclaim_policy.get_or_insert_with(|| "Delete".into());
            o.volume_binding_mode
                .get_or_insert_with(|| "Immediate".into());
            w.add_storage_class_object(&mut o);
            w.tick();
            Ok((object_json(w, res, "", &name)?, warn))
        }
        Res::Event => {
            let (mut o, warn): (core::Event, _) = decode(res, body, fv)?;
            let errors = create_meta(w, res, ns, &mut o.metadata)?;
            let name = o.metadata.name.clone().unwrap_or_default();
            invalid(res, &name, errors)?;
            if w.events
                .items
                .contains_key(&(ns_str.to_string(), name.clone()))
            {
                return Err(exists(res, &name));
            }
            w.add_api_event(o);
            w.tick();
            Ok((object_json(w, res, ns_str, &name)?, warn))
        }
        Res::Node | Res::EventV1 => Err(ApiError::MethodNotAllowed),
    }
}

/// `PUT` (or the result of a `PATCH`): the whole object replaced.
pub fn update(
    w: &mut World,
    res: Res,
    ns: Option<&str>,
    name: &str,
    body: &Value,
    fv: FieldValidation,
) -> Answer {
    let ns_str = ns.unwrap_or_default();
    let current = object_json(w, res, ns_str, name)?;
    let current_rv = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let given_rv = body["metadata"]["resourceVersion"].as_str();
    check_version(res, name, given_rv, &current_rv)?;
    match res {
        Res::Namespace => {
            let (mut o, warn): (core::Namespace, _) = decode(res, body, fv)?;
            same_name(&o.metadata, name)?;
            let errs = super::labels_problems("metadata.labels", o.metadata.labels.as_ref());
            invalid(res, name, errs)?;
            let old = w
                .namespaces
                .get(name)
                .cloned()
                .ok_or_else(|| not_found(res, name))?;
            o.spec = old.spec.clone();
            o.status = old.status.clone();
            o.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("kubernetes.io/metadata.name".into(), name.into());
            let key = name.to_string();
            w.replace_kept(
                res,
                &key,
                ("", name),
                o,
                |o| &mut o.metadata,
                |w| &mut w.namespaces,
            );
            Ok((object_json(w, res, "", name)?, warn))
        }
        Res::Node => {
            let (o, warn): (core::Node, _) = decode(res, body, fv)?;
            same_name(&o.metadata, name)?;
            let e = crate::kube::node_edits(&o);
            w.set_node_meta(name, e.labels, e.annotations, e.taints)
                .and_then(|()| w.set_unschedulable(name, e.unschedulable))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok((object_json(w, res, "", name)?, warn))
        }
        Res::Pod => update_pod(w, ns_str, name, body, fv),
        Res::Deployment | Res::StatefulSet | Res::DaemonSet | Res::ReplicaSet => {
            update_workload(w, res, ns_str, name, body, fv)
        }
        Res::Job => update_job(w, ns_str, name, body, fv),
        Res::Budget => put_budget(w, ns_str, Some(name), body, fv),
        Res::Service => update_service(w, ns_str, name, body, fv),
        Res::Secret => {
            let (mut o, warn): (core::Secret, _) = decode(res, body, fv)?;
            same_name(&o.metadata, name)?;
            same_namespace(&o.metadata, ns_str)?;
            let key = (ns_str.to_string(), name.to_string());
            let old = w
                .secrets
                .get(&key)
                .cloned()
                .ok_or_else(|| not_found(res, name))?;
            fold_string_data(&mut o);
            let mut errors = secret_keys(&o);
            if o.type_.is_none() {
                o.type_.clone_from(&old.type_);
            }
            if o.type_ != old.type_ {
                errors.push(FieldError::forbidden("type", "field is immutable"));
            }
            errors.extend(immutable_kept(
                old.immutable,
                o.immutable,
                o.data == old.data,
            ));
            invalid(res, name, errors)?;
            w.replace_kept(
                res,
                &key,
                (ns_str, name),
                o,
                |o| &mut o.metadata,
                |w| &mut w.secrets,
            );
            Ok((object_json(w, res, ns_str, name)?, warn))
        }
        Res::ConfigMap => {
            let (o, warn): (core::ConfigMap, _) = decode(res, body, fv)?;
            same_name(&o.metadata, name)?;
            same_namespace(&o.metadata, ns_str)?;
            let key = (ns_str.to_string(), name.to_string());
            let old = w
                .config_maps
                .get(&key)
                .cloned()
                .ok_or_else(|| not_found(res, name))?;
            let mut errors = config_keys(&o);
            errors.extend(immutable_kept(
                old.immutable,
                o.immutable,
                o.data == old.data && o.binary_data == old.binary_data,
            ));
            invalid(res, name, errors)?;
            w.replace_kept(
                res,
                &key,
                (ns_str, name),
                o,
                |o| &mut o.metadata,
                |w| &mut w.config_maps,
            );
            Ok((object_json(w, res, ns_str, name)?, warn))
        }
        Res::Claim => update_claim(w, ns_str, name, body, fv),
        Res::Volume => {
            let (mut o, warn): (core::PersistentVolume, _) = decode(res, body, fv)?;
            same_name(&o.metadata, name)?;
            let old = w
                .volumes
                .get(name)
                .cloned()
                .ok_or_else(|| not_found(res, name))?;
            o.status = old.status.clone();
            let key = name.to_string();
            w.replace_kept(
                res,
                &key,
                ("", name),
                o,
                |o| &mut o.metadata,
                |w| &mut w.volumes,
            );
            Ok((object_json(w, res, "", name)?, warn))
        }
        Res::StorageClass => {
            let (o, warn): (storage::StorageClass, _) = decode(res, body, fv)?;
            same_name(&o.metadata, name)?;
            let old = w
                .storage_classes
                .get(name)
                .cloned()
                .ok_or_else(|| not_found(res, name))?;
            let mut errors = Vec::new();
            if o.provisioner != old.provisioner {
                errors.push(FieldError::forbidden(
                    "provisioner",
                    "updates to provisioner are forbidden.",
                ));
            }
            if o.parameters != old.parameters {
                errors.push(FieldError::forbidden(
                    "parameters",
                    "updates to parameters are forbidden.",
                ));
            }
            if o.reclaim_policy.is_some() && o.reclaim_policy != old.reclaim_policy {
                errors.push(FieldError::forbidden(
                    "reclaimPolicy",
                    "updates to reclaimPolicy are forbidden.",
                ));
            }
            if o.volume_binding_mode.is_some() && o.volume_binding_mode != old.volume_binding_mode {
                errors.push(immutable(
                    "volumeBindingMode",
                    quoted(o.volume_binding_mode.as_deref().unwrap_or_default()),
                ));
            }
            invalid(res, name, errors)?;
            let mut o = o;
            o.reclaim_policy = old.reclaim_policy.clone();
            o.volume_binding_mode = old.volume_binding_mode.clone();
            let key = name.to_string();
            w.replace_kept(
                res,
                &key,
                ("", name),
                o,
                |o| &mut o.metadata,
                |w| &mut w.storage_classes,
            );
            Ok((object_json(w, res, "", name)?, warn))
        }
        Res::Event => {
            let (o, warn): (core::Event, _) = decode(res, body, fv)?;
            same_name(&o.metadata, name)?;
            let key = (ns_str.to_string(), name.to_string());
            w.replace_kept(
                res,
                &key,
                (ns_str, name),
                o,
                |o| &mut o.metadata,
                |w| &mut w.events.items,
            );
            Ok((object_json(w, res, ns_str, name)?, warn))
        }
        Res::EventV1 => Err(ApiError::MethodNotAllowed),
    }
}

/// `DELETE`: the object as it is after (a pod or namespace still terminating, a claim still in
/// use) or a `Status` of success.
pub fn delete(
    w: &mut World,
    res: Res,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let ns_str = ns.unwrap_or_default();
    let current = object_json(w, res, ns_str, name)?;
    let meta = &current["metadata"];
    if let Some(uid) = opts.uid.as_deref()
        && Some(uid) != meta["uid"].as_str()
    {
        return Err(ApiError::Conflict {
            resource: res.qualified(),
            name: name.to_string(),
            detail: format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta["uid"].as_str().unwrap_or_default()
            ),
        });
    }
    if let Some(rv) = opts.resource_version.as_deref()
        && Some(rv) != meta["resourceVersion"].as_str()
    {
        return Err(ApiError::Conflict {
            resource: res.qualified(),
            name: name.to_string(),
            detail: format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta["resourceVersion"].as_str().unwrap_or_default()
            ),
        });
    }
    let uid = meta["uid"].as_str().map(str::to_string);
    let key = (ns_str.to_string(), name.to_string());
    let propagation = opts.propagation.unwrap_or_default();
    let done = status_success(res, name, uid.as_deref());
    match res {
        Res::Namespace => {
            if crate::model::namespaces::UNDELETABLE.contains(&name) {
                return Err(ApiError::Forbidden {
                    resource: "namespaces".into(),
                    name: name.into(),
                    detail: "this namespace may not be deleted".into(),
                });
            }
            w.delete_namespace(name);
            Ok(crate::kube::object(w, res, "", name).unwrap_or(done))
        }
        Res::Pod => {
            let gone = w
                .delete_pod(ns_str, name, opts.grace_ms)
                .map_err(|_| not_found(res, name))?;
            Ok(crate::kube::object(w, res, ns_str, name)
                .or_else(|| serde_json::to_value(crate::kube::pod(&gone, w)).ok())
                .unwrap_or(done))
        }
        Res::Deployment | Res::StatefulSet | Res::DaemonSet | Res::ReplicaSet => {
            let kind = workload_kind(res);
            if w.workloads
                .contains_key(&(kind, key.0.clone(), key.1.clone()))
            {
                w.delete_workload(&(kind, key.0, key.1), propagation);
                return Ok(done);
            }
            // A Deployment's ReplicaSet: its Deployment makes it again at once, with new pods.
            Err(ApiError::MethodNotAllowed)
        }
        Res::Job => {
            w.delete_job(&key, opts.propagation.unwrap_or(Propagation::Orphan));
            Ok(done)
        }
        Res::Budget => {
            w.delete_budget(&key);
            w.tick();
            Ok(done)
        }
        Res::Service => {
            w.delete_service(&key);
            w.tick();
            Ok(done)
        }
        Res::Secret => {
            w.delete_secret(&key);
            w.tick();
            Ok(done)
        }
        Res::ConfigMap => {
            w.delete_config_map(&key);
            w.tick();
            Ok(done)
        }
        Res::Claim => {
            w.delete_claim(&key);
            w.tick();
            Ok(crate::kube::object(w, res, ns_str, name).unwrap_or(done))
        }
        Res::Volume => {
            w.remove_volume(name);
            w.tick();
            Ok(done)
        }
        Res::StorageClass => {
            if let Some(mut sc) = w.storage_classes.remove(name) {
                sc.metadata.resource_version = Some(w.bump().to_string());
                if let Ok(v) = serde_json::to_value(&sc) {
                    w.noted_gone(res, "", name, v);
                }
            }
            w.tick();
            Ok(done)
        }
        Res::Event => {
            if let Some(mut e) = w.events.items.remove(&key) {
                e.metadata.resource_version = Some(w.bump().to_string());
                if let Ok(v) = serde_json::to_value(&e) {
                    w.noted_gone(res, ns_str, name, v);
                }
            }
            w.tick();
            Ok(done)
        }
        Res::Node | Res::EventV1 => Err(ApiError::MethodNotAllowed),
    }
}

fn workload_kind(res: Res) -> Kind {
    match res {
        Res::StatefulSet => Kind::StatefulSet,
        Res::DaemonSet => Kind::DaemonSet,
        Res::ReplicaSet => Kind::ReplicaSet,
        _ => Kind::Deployment,
    }
}

// ----- pods ---------------------------------------------------------------------------------

fn create_pod(w: &mut World, ns: &str, body: &Value, fv: FieldValidation) -> Answer {
    let res = Res::Pod;
    let (mut o, warn): (core::Pod, _) = decode(res, body, fv)?;
    let mut errors = create_meta(w, res, Some(ns), &mut o.metadata)?;
    let name = o.metadata.name.clone().unwrap_or_default();
    let mut spec = o.spec.clone().unwrap_or_default();
    default_spec(&mut spec, true);
    errors.extend(validate_spec(
        &spec,
        "spec",
        &["Always", "OnFailure", "Never"],
    ));
    let labels = labels_of(&o.metadata);
    let annotations = annotations_of(&o.metadata);
    let t = match template::from_spec(&spec, &labels, &annotations, "spec") {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(spec_error(e));
            None
        }
    };
    invalid(res, &name, errors)?;
    let key = (ns.to_string(), name.clone());
    if w.pods.contains_key(&key) {
        return Err(exists(res, &name));
    }
    if let Some(t) = t {
        w.create_pod(ns, &name, None, t, Labels::new(), None);
    }
    w.tick();
    Ok((object_json(w, res, ns, &name)?, warn))
}

/// What a pod update may not change: everything in `spec` but images (and `nodeName`, which
/// the scheduler owns).
fn comparable(spec: &core::PodSpec) -> Value {
    let mut s = spec.clone();
    s.node_name = None;
    for c in s
        .containers
        .iter_mut()
        .chain(s.init_containers.iter_mut().flatten())
    {
        c.image = None;
    }
    serde_json::to_value(s).unwrap_or_default()
}

fn update_pod(w: &mut World, ns: &str, name: &str, body: &Value, fv: FieldValidation) -> Answer {
    let res = Res::Pod;
    let (o, warn): (core::Pod, _) = decode(res, body, fv)?;
    same_name(&o.metadata, name)?;
    same_namespace(&o.metadata, ns)?;
    let key = (ns.to_string(), name.to_string());
    let p = w
        .pods
        .get(&key)
        .cloned()
        .ok_or_else(|| not_found(res, name))?;
    let old_spec = crate::kube::pod(&p, w).spec.unwrap_or_default();
    let mut new_spec = o.spec.clone().unwrap_or_default();
    if p.spec.given.is_some() {
        default_spec(&mut new_spec, true);
    }
    let mut errors = super::labels_problems("metadata.labels", o.metadata.labels.as_ref());
    if comparable(&old_spec) != comparable(&new_spec) {
        errors.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    for (i, c) in new_spec.containers.iter().enumerate() {
        if c.image.as_deref().is_none_or(str::is_empty) {
            errors.push(FieldError::required(
                format!("spec.containers[{i}].image"),
                "",
            ));
        }
    }
    invalid(res, name, errors)?;
    let images = |s: &core::PodSpec| -> Vec<Option<String>> {
        s.containers.iter().map(|c| c.image.clone()).collect()
    };
    if images(&old_spec) != images(&new_spec) {
        new_spec.node_name = None;
        w.update_pod_spec(&key, new_spec);
    }
    w.update_pod_meta(&key, labels_of(&o.metadata), annotations_of(&o.metadata));
    Ok((object_json(w, res, ns, name)?, warn))
}

// ----- workloads ----------------------------------------------------------------------------

/// The parts of a workload's spec the model needs, whatever its kind.
struct WorkloadSpec {
    replicas: Option<i32>,
    selector: Option<meta::LabelSelector>,
    template: core::PodTemplateSpec,
    /// The whole spec, defaulted, as JSON.
    spec: Value,
}

fn pct(s: &str) -> IntOrString {
    IntOrString::String(s.into())
}

/// Decodes and defaults a workload of `res`.
fn workload_spec(
    res: Res,
    body: &Value,
    fv: FieldValidation,
) -> Result<(meta::ObjectMeta, WorkloadSpec, Vec<String>), ApiError> {
    let template_of = |t: &mut core::PodTemplateSpec| {
        default_spec(t.spec.get_or_insert_with(Default::default), false);
    };
    Ok(match res {
        Res::Deployment => {
            let (mut o, warn): (apps::Deployment, _) = decode(res, body, fv)?;
            let s = o.spec.get_or_insert_with(Default::default);
            s.replicas.get_or_insert(1);
            s.revision_history_limit.get_or_insert(10);
            s.progress_deadline_seconds.get_or_insert(600);
            let strategy = s.strategy.get_or_insert_with(Default::default);
            let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
            if kind == "RollingUpdate" {
                let r = strategy.rolling_update.get_or_insert_with(Default::default);
                r.max_surge.get_or_insert_with(|| pct("25%"));
                r.max_unavailable.get_or_insert_with(|| pct("25%"));
            }
            template_of(&mut s.template);
            let spec = serde_json::to_value(&*s).unwrap_or_default();
            (
                o.metadata,
                WorkloadSpec {
                    replicas: s.replicas,
                    selector: Some(s.selector.clone()),
                    template: s.template.clone(),
                    spec,
                },
                warn,
            )
        }
        Res::StatefulSet => {
            let (mut o, warn): (apps::StatefulSet, _) = decode(res, body, fv)?;
            let s = o.spec.get_or_insert_with(Default::default);
            s.replicas.get_or_insert(1);
            s.revision_history_limit.get_or_insert(10);
            s.pod_management_policy
                .get_or_insert_with(|| "OrderedReady".into());
            let u = s.update_strategy.get_or_insert_with(Default::default);
            if u.type_.get_or_insert_with(|| "RollingUpdate".into()) == "RollingUpdate" {
                u.rolling_update
                    .get_or_insert_with(Default::default)
                    .partition
                    .get_or_insert(0);
            }
            let p = s
                .persistent_volume_claim_retention_policy
                .get_or_insert_with(Default::default);
            p.when_deleted.get_or_insert_with(|| "Retain".into());
            p.when_scaled.get_or_insert_with(|| "Retain".into());
            template_of(&mut s.template);
            let spec = serde_json::to_value(&*s).unwrap_or_default();
            (
                o.metadata,
                WorkloadSpec {
                    replicas: s.replicas,
                    selector: Some(s.selector.clone()),
                    template: s.template.clone(),
                    spec,
                },
                warn,
            )
        }
        Res::DaemonSet => {
            let (mut o, warn): (apps::DaemonSet, _) = decode(res, body, fv)?;
            let s = o.spec.get_or_insert_with(Default::default);
            s.revision_history_limit.get_or_insert(10);
            let u = s.update_strategy.get_or_insert_with(Default::default);
            if u.type_.get_or_insert_with(|| "RollingUpdate".into()) == "RollingUpdate" {
                let r = u.rolling_update.get_or_insert_with(Default::default);
                r.max_unavailable.get_or_insert(IntOrString::Int(1));
                r.max_surge.get_or_insert(IntOrString::Int(0));
            }
            template_of(&mut s.template);
            let spec = serde_json::to_value(&*s).unwrap_or_default();
            (
                o.metadata,
                WorkloadSpec {
                    replicas: None,
                    selector: Some(s.selector.clone()),
                    template: s.template.clone(),
                    spec,
                },
                warn,
            )
        }
        _ => {
            let (mut o, warn): (apps::ReplicaSet, _) = decode(res, body, fv)?;
            let s = o.spec.get_or_insert_with(Default::default);
            s.replicas.get_or_insert(1);
            let t = s.template.get_or_insert_with(Default::default);
            template_of(t);
            let template = t.clone();
            let spec = serde_json::to_value(&*s).unwrap_or_default();
            (
                o.metadata,
                WorkloadSpec {
                    replicas: s.replicas,
                    selector: Some(s.selector.clone()),
                    template,
                    spec,
                },
                warn,
            )
        }
    })
}

/// A workload's field errors.
fn workload_problems(res: Res, s: &WorkloadSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    let labels = s
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    match &s.selector {
        None => out.push(FieldError::required("spec.selector", "")),
        Some(sel)
            if sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                && sel.match_expressions.as_ref().is_none_or(Vec::is_empty) =>
        {
            out.push(FieldError::invalid(
                "spec.selector",
                go_selector(sel),
                format!(
                    "empty selector is invalid for {}",
                    res.def().kind.to_lowercase()
                ),
            ))
        }
        Some(sel) => {
            if !selector(sel).matches(&labels) {
                out.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    go_map(&labels),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    if let Some(r) = s.replicas
        && r < 0
    {
        out.push(FieldError::invalid(
            "spec.replicas",
            r.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    match &s.template.spec {
        Some(spec) => out.extend(validate_spec(spec, "spec.template.spec", &["Always"])),
        None => out.push(FieldError::required("spec.template.spec.containers", "")),
    }
    out.extend(super::labels_problems(
        "spec.template.metadata.labels",
        s.template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
    ));
    out
}

fn model_template(s: &WorkloadSpec) -> Result<crate::model::PodTemplate, FieldError> {
    let m = s.template.metadata.clone().unwrap_or_default();
    template::from_spec(
        &s.template.spec.clone().unwrap_or_default(),
        &labels_of(&m),
        &annotations_of(&m),
        "spec.template.spec",
    )
    .map_err(spec_error)
}

fn create_workload(w: &mut World, res: Res, ns: &str, body: &Value, fv: FieldValidation) -> Answer {
    let (mut m, s, warn) = workload_spec(res, body, fv)?;
    let mut errors = create_meta(w, res, Some(ns), &mut m)?;
    let name = m.name.clone().unwrap_or_default();
    errors.extend(workload_problems(res, &s));
    let t = model_template(&s).map_err(|e| errors.push(e)).ok();
    invalid(res, &name, errors)?;
    let kind = workload_kind(res);
    let taken = w
        .workloads
        .contains_key(&(kind, ns.to_string(), name.clone()))
        || (res == Res::ReplicaSet && crate::kube::object(w, res, ns, &name).is_some());
    if taken {
        return Err(exists(res, &name));
    }
    let Some(template) = t else {
        return Err(ApiError::Internal("no template".into()));
    };
    let workload = Workload {
        kind,
        namespace: ns.to_string(),
        name: name.clone(),
        uid: String::new(),
        created: 0,
        replicas: s.replicas.unwrap_or(1).max(0) as u32,
        template,
        replica_set: None,
        resource_version: 0,
        generation: 1,
        labels: labels_of(&m),
        annotations: annotations_of(&m),
        selector: s.selector.as_ref().map(selector).unwrap_or_default(),
        given: Some(Given::new(s.spec)),
        status: WorkloadStatus::default(),
        revision: 1,
        rolling: false,
        old_sets: Vec::new(),
    };
    w.add_api_workload(workload);
    Ok((object_json(w, res, ns, &name)?, warn))
}

fn update_workload(
    w: &mut World,
    res: Res,
    ns: &str,
    name: &str,
    body: &Value,
    fv: FieldValidation,
) -> Answer {
    let kind = workload_kind(res);
    let key = (kind, ns.to_string(), name.to_string());
    let Some(old) = w.workloads.get(&key).cloned() else {
        // A Deployment's ReplicaSet is its Deployment's to change.
        return Err(if crate::kube::object(w, res, ns, name).is_some() {
            ApiError::MethodNotAllowed
        } else {
            not_found(res, name)
        });
    };
    let (m, s, warn) = workload_spec(res, body, fv)?;
    same_name(&m, name)?;
    same_namespace(&m, ns)?;
    let mut errors = workload_problems(res, &s);
    errors.extend(super::labels_problems("metadata.labels", m.labels.as_ref()));
    if let Some(sel) = &s.selector
        && selector(sel) != old.selector
    {
        errors.push(immutable("spec.selector", go_selector(sel)));
    }
    let old_template = crate::kube::workload_json(&old, w)
        .ok()
        .map(|v| v["spec"]["template"].clone())
        .unwrap_or_default();
    let new_template = s.spec["template"].clone();
    let changed = old_template != new_template;
    let template = if changed {
        model_template(&s).map_err(|e| errors.push(e)).ok()
    } else {
        None
    };
    invalid(res, name, errors)?;
    let change = WorkloadChange {
        labels: labels_of(&m),
        annotations: annotations_of(&m),
        replicas: s.replicas.map_or(old.replicas, |r| r.max(0) as u32),
        template: template.map(|t| (t, Given::new(new_template))),
        given: Given::new(s.spec),
    };
    w.update_api_workload(&key, change);
    Ok((object_json(w, res, ns, name)?, warn))
}

// ----- jobs ---------------------------------------------------------------------------------

const JOB_LABELS: [&str; 2] = ["batch.kubernetes.io/controller-uid", "controller-uid"];
const JOB_NAME_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];

fn job_problems(spec: &batch::JobSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    let pod = spec.template.spec.clone().unwrap_or_default();
    out.extend(validate_spec(
        &pod,
        "spec.template.spec",
        &["OnFailure", "Never"],
    ));
    for (field, v) in [
        ("spec.parallelism", spec.parallelism),
        ("spec.completions", spec.completions),
        ("spec.backoffLimit", spec.backoff_limit),
    ] {
        if let Some(v) = v
            && v < 0
        {
            out.push(FieldError::invalid(
                field,
                v.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(d) = spec.active_deadline_seconds
        && d <= 0
    {
        out.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            d.to_string(),
            "must be greater than 0",
        ));
    }
    out
}

fn create_job(w: &mut World, ns: &str, body: &Value, fv: FieldValidation) -> Answer {
    let res = Res::Job;
    let (mut o, warn): (batch::Job, _) = decode(res, body, fv)?;
    let mut errors = create_meta(w, res, Some(ns), &mut o.metadata)?;
    let name = o.metadata.name.clone().unwrap_or_default();
    let uid = w.uid();
    let spec = o.spec.get_or_insert_with(Default::default);
    if spec.parallelism.is_none() && spec.completions.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".into());
    let pod = spec.template.spec.get_or_insert_with(Default::default);
    // A Job's template has no default restart policy: it must say OnFailure or Never.
    let restart = pod.restart_policy.clone();
    default_spec(pod, false);
    pod.restart_policy = restart;
    if spec.manual_selector != Some(true) {
        if spec.selector.is_some() {
            errors.push(FieldError::invalid(
                "spec.selector",
                spec.selector.as_ref().map(go_selector).unwrap_or_default(),
                "`selector` will be auto-generated",
            ));
        }
        spec.selector = Some(meta::LabelSelector {
            match_labels: Some(BTreeMap::from([(JOB_LABELS[0].to_string(), uid.clone())])),
            match_expressions: None,
        });
        let labels = spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        for l in JOB_LABELS {
            labels.insert(l.into(), uid.clone());
        }
        for l in JOB_NAME_LABELS {
            labels.insert(l.into(), name.clone());
        }
    }
    errors.extend(job_problems(spec));
    // A Job without labels has its template's (`kubectl get jobs -l job-name=...`).
    if o.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty) {
        o.metadata.labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone());
    }
    let tm = spec.template.metadata.clone().unwrap_or_default();
    let t = template::from_spec(
        &spec.template.spec.clone().unwrap_or_default(),
        &labels_of(&tm),
        &annotations_of(&tm),
        "spec.template.spec",
    )
    .map_err(|e| errors.push(spec_error(e)))
    .ok();
    invalid(res, &name, errors)?;
    let key = (ns.to_string(), name.clone());
    if w.jobs.contains_key(&key) {
        return Err(exists(res, &name));
    }
    let Some(template) = t else {
        return Err(ApiError::Internal("no template".into()));
    };
    let spec = o.spec.clone().unwrap_or_default();
    let job = SimJob {
        namespace: ns.to_string(),
        name: name.clone(),
        uid,
        created: 0,
        resource_version: 0,
        generation: 1,
        labels: labels_of(&o.metadata),
        annotations: annotations_of(&o.metadata),
        spec: Given::new(serde_json::to_value(&spec).unwrap_or_default()),
        template,
        parallelism: spec.parallelism.unwrap_or(1).max(0) as u32,
        completions: spec.completions.map(|c| c.max(0) as u32),
        backoff_limit: spec.backoff_limit.unwrap_or(6).max(0) as u32,
        active_deadline_ms: spec
            .active_deadline_seconds
            .map(|s| s.max(0) as Millis * 1000),
        ttl_after_finished_ms: spec
            .ttl_seconds_after_finished
            .map(|s| s.max(0) as Millis * 1000),
        suspend: spec.suspend.unwrap_or(false),
        status: JobStatus::default(),
    };
    w.add_job(job);
    Ok((object_json(w, res, ns, &name)?, warn))
}

fn update_job(w: &mut World, ns: &str, name: &str, body: &Value, fv: FieldValidation) -> Answer {
    let res = Res::Job;
    let key = (ns.to_string(), name.to_string());
    let old = w
        .jobs
        .get(&key)
        .cloned()
        .ok_or_else(|| not_found(res, name))?;
    let (o, warn): (batch::Job, _) = decode(res, body, fv)?;
    same_name(&o.metadata, name)?;
    same_namespace(&o.metadata, ns)?;
    let spec = o.spec.clone().unwrap_or_default();
    let new = serde_json::to_value(&spec).unwrap_or_default();
    let mut errors = job_problems(&spec);
    for field in ["template", "selector", "completions", "completionMode"] {
        if !new[field].is_null() && new[field] != old.spec[field] {
            errors.push(immutable(&format!("spec.{field}"), new[field].to_string()));
        }
    }
    invalid(res, name, errors)?;
    let mut merged = (*old.spec).clone();
    for field in [
        "parallelism",
        "suspend",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
        "backoffLimit",
    ] {
        if !new[field].is_null() {
            merged[field] = new[field].clone();
        }
    }
    let job = SimJob {
        labels: labels_of(&o.metadata),
        annotations: annotations_of(&o.metadata),
        parallelism: spec
            .parallelism
            .map_or(old.parallelism, |p| p.max(0) as u32),
        suspend: spec.suspend.unwrap_or(old.suspend),
        active_deadline_ms: spec
            .active_deadline_seconds
            .map(|s| s.max(0) as Millis * 1000)
            .or(old.active_deadline_ms),
        ttl_after_finished_ms: spec
            .ttl_seconds_after_finished
            .map(|s| s.max(0) as Millis * 1000)
            .or(old.ttl_after_finished_ms),
        spec: Given::new(merged),
        ..old
    };
    w.update_api_job(&key, job);
    Ok((object_json(w, res, ns, name)?, warn))
}

// ----- budgets ------------------------------------------------------------------------------

fn int_or_percent(
    field: &str,
    v: &IntOrString,
    errors: &mut Vec<FieldError>,
) -> Option<IntOrPercent> {
    match v {
        IntOrString::Int(n) if *n < 0 => {
            errors.push(FieldError::invalid(
                field,
                n.to_string(),
                "must be greater than or equal to 0",
            ));
            None
        }
        IntOrString::Int(n) => Some(IntOrPercent::Int(*n as u32)),
        IntOrString::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<u32>().ok()) {
            Some(p) if p <= 100 => Some(IntOrPercent::Percent(p)),
            Some(_) => {
                errors.push(FieldError::invalid(
                    field,
                    quoted(s),
                    "must not be greater than 100%",
                ));
                None
            }
            None => {
                errors.push(FieldError::invalid(
                    field,
                    quoted(s),
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
                None
            }
        },
    }
}

/// The apiserver prints a PodDisruptionBudgetSpec with Go's `%#v`, pointers and all.
fn go_budget_spec(s: &policy::PodDisruptionBudgetSpec) -> String {
    let ptr = |set: bool, ty: &str, at: u32| {
        if set {
            format!("(*{ty})(0xc000{at:06x})")
        } else {
            format!("(*{ty})(nil)")
        }
    };
    format!(
        "policy.PodDisruptionBudgetSpec{{MinAvailable:{}, Selector:{}, MaxUnavailable:{}, UnhealthyPodEvictionPolicy:{}}}",
        ptr(s.min_available.is_some(), "intstr.IntOrString", 0x1a2b30),
        ptr(s.selector.is_some(), "v1.LabelSelector", 0x1a2b40),
        ptr(s.max_unavailable.is_some(), "intstr.IntOrString", 0x1a2b50),
        ptr(
            s.unhealthy_pod_eviction_policy.is_some(),
            "policy.UnhealthyPodEvictionPolicyType",
            0x1a2b60
        ),
    )
}

/// Creates (`name` None) or replaces a PodDisruptionBudget.
fn put_budget(
    w: &mut World,
    ns: &str,
    name_given: Option<&str>,
    body: &Value,
    fv: FieldValidation,
) -> Answer {
    let res = Res::Budget;
    let (mut o, warn): (policy::PodDisruptionBudget, _) = decode(res, body, fv)?;
    let mut errors = match name_given {
        None => create_meta(w, res, Some(ns), &mut o.metadata)?,
        Some(n) => {
            same_name(&o.metadata, n)?;
            same_namespace(&o.metadata, ns)?;
            super::labels_problems("metadata.labels", o.metadata.labels.as_ref())
        }
    };
    let name = o.metadata.name.clone().unwrap_or_default();
    let spec = o.spec.clone().unwrap_or_default();
    if spec.min_available.is_some() && spec.max_unavailable.is_some() {
        errors.push(FieldError::invalid(
            "spec",
            go_budget_spec(&spec),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    let min = spec
        .min_available
        .as_ref()
        .and_then(|v| int_or_percent("spec.minAvailable", v, &mut errors));
    let max = spec
        .max_unavailable
        .as_ref()
        .and_then(|v| int_or_percent("spec.maxUnavailable", v, &mut errors));
    if let Some(p) = spec.unhealthy_pod_eviction_policy.as_deref()
        && !["IfHealthyBudget", "AlwaysAllow"].contains(&p)
    {
        errors.push(FieldError::not_supported(
            "spec.unhealthyPodEvictionPolicy",
            p,
            &["AlwaysAllow", "IfHealthyBudget"],
        ));
    }
    invalid(res, &name, errors)?;
    let key = (ns.to_string(), name.clone());
    let creating = name_given.is_none();
    if creating && w.pdbs.contains_key(&key) {
        return Err(exists(res, &name));
    }
    let b = Pdb {
        namespace: ns.to_string(),
        name: name.clone(),
        uid: String::new(),
        created: 0,
        selector: spec.selector.as_ref().map(selector).unwrap_or_default(),
        min_available: min,
        max_unavailable: max,
        resource_version: 0,
        labels: labels_of(&o.metadata),
        annotations: annotations_of(&o.metadata),
        generation: 1,
        unhealthy_pod_eviction_policy: spec.unhealthy_pod_eviction_policy.clone(),
        disrupted: BTreeMap::new(),
        written: None,
    };
    w.put_api_budget(b, creating);
    Ok((object_json(w, res, ns, &name)?, warn))
}

// ----- services -----------------------------------------------------------------------------

fn default_service(s: &mut core::ServiceSpec) {
    let kind = s.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    if kind != "ExternalName" {
        s.session_affinity.get_or_insert_with(|| "None".into());
        s.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
        s.ip_family_policy
            .get_or_insert_with(|| "SingleStack".into());
        s.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        s.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if kind == "LoadBalancer" {
        s.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    for p in s.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        if matches!(p.target_port, None | Some(IntOrString::Int(0))) {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
}

fn service_problems(s: &core::ServiceSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    let kind = s.type_.as_deref().unwrap_or("ClusterIP");
    const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&kind) {
        out.push(FieldError::not_supported("spec.type", kind, &TYPES));
    }
    let headless = s.cluster_ip.as_deref() == Some("None");
    let ports = s.ports.clone().unwrap_or_default();
    if kind == "ExternalName" {
        if s.external_name.as_deref().is_none_or(str::is_empty) {
            out.push(FieldError::required("spec.externalName", ""));
        }
    } else if ports.is_empty() && !headless {
        out.push(FieldError::required("spec.ports", ""));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        if !(1..=65535).contains(&p.port) {
            out.push(FieldError::invalid(
                format!("spec.ports[{i}].port"),
                p.port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        match p.name.as_deref() {
            None | Some("") if ports.len() > 1 => {
                out.push(FieldError::required(format!("spec.ports[{i}].name"), ""))
            }
            Some(n) if !n.is_empty() && !names.insert(n.to_string()) => {
                out.push(FieldError::duplicate(format!("spec.ports[{i}].name"), n))
            }
            _ => {}
        }
        if let Some(proto) = p.protocol.as_deref()
            && !["TCP", "UDP", "SCTP"].contains(&proto)
        {
            out.push(FieldError::not_supported(
                format!("spec.ports[{i}].protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    out
}

fn create_service(w: &mut World, ns: &str, body: &Value, fv: FieldValidation) -> Answer {
    let res = Res::Service;
    let (mut o, warn): (core::Service, _) = decode(res, body, fv)?;
    let mut errors = create_meta(w, res, Some(ns), &mut o.metadata)?;
    let name = o.metadata.name.clone().unwrap_or_default();
    let spec = o.spec.get_or_insert_with(Default::default);
    default_service(spec);
    errors.extend(service_problems(spec));
    invalid(res, &name, errors)?;
    if w.services.contains_key(&(ns.to_string(), name.clone())) {
        return Err(exists(res, &name));
    }
    w.add_service(o).map_err(|e| ApiError::Invalid {
        kind: "Service".into(),
        group: String::new(),
        name: name.clone(),
        causes: vec![FieldError::invalid("spec", "", e.to_string())],
    })?;
    w.tick();
    Ok((object_json(w, res, ns, &name)?, warn))
}

fn update_service(
    w: &mut World,
    ns: &str,
    name: &str,
    body: &Value,
    fv: FieldValidation,
) -> Answer {
    let res = Res::Service;
    let key = (ns.to_string(), name.to_string());
    let old = w
        .services
        .get(&key)
        .cloned()
        .ok_or_else(|| not_found(res, name))?;
    let (mut o, warn): (core::Service, _) = decode(res, body, fv)?;
    same_name(&o.metadata, name)?;
    same_namespace(&o.metadata, ns)?;
    let old_spec = old.spec.clone().unwrap_or_default();
    let spec = o.spec.get_or_insert_with(Default::default);
    default_service(spec);
    let mut errors = service_problems(spec);
    match spec.cluster_ip.as_deref() {
        None | Some("") => {
            spec.cluster_ip = old_spec.cluster_ip.clone();
            spec.cluster_ips = old_spec.cluster_ips.clone();
        }
        Some(ip) if Some(ip) != old_spec.cluster_ip.as_deref() => errors.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            format!("[]string{{{}}}", quoted(ip)),
            "may not change once set",
        )),
        Some(_) => spec.cluster_ips = old_spec.cluster_ips.clone(),
    }
    for p in spec.ports.iter_mut().flatten() {
        if p.node_port.is_none_or(|n| n == 0) {
            p.node_port = old_spec
                .ports
                .iter()
                .flatten()
                .find(|q| q.port == p.port && q.protocol == p.protocol)
                .and_then(|q| q.node_port);
        }
    }
    invalid(res, name, errors)?;
    o.status = old.status.clone();
    w.replace_kept(
        res,
        &key,
        (ns, name),
        o,
        |o| &mut o.metadata,
        |w| &mut w.services,
    );
    Ok((object_json(w, res, ns, name)?, warn))
}

/// An object made `immutable` (a ConfigMap, a Secret) keeps its data and stays immutable.
fn immutable_kept(old: Option<bool>, new: Option<bool>, same_data: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if old != Some(true) {
        return errors;
    }
    if !same_data {
        errors.push(FieldError::forbidden(
            "data",
            "field is immutable when `immutable` is set",
        ));
    }
    if new != Some(true) {
        errors.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    errors
}

/// `stringData` written into `data`, over what `data` had (the apiserver never stores it).
fn fold_string_data(o: &mut core::Secret) {
    if let Some(sd) = o.string_data.take() {
        let data = o.data.get_or_insert_with(Default::default);
        for (k, v) in sd {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
}

/// A Secret's keys, as a ConfigMap's are judged (`stringData` is folded into `data` by
/// the apiserver; the sim keeps `data`).
fn secret_keys(o: &core::Secret) -> Vec<FieldError> {
    let cm = core::ConfigMap {
        data: o
            .data
            .as_ref()
            .map(|d| d.keys().map(|k| (k.clone(), String::new())).collect()),
        ..Default::default()
    };
    config_keys(&cm)
}

fn config_keys(o: &core::ConfigMap) -> Vec<FieldError> {
    let ok = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    };
    let mut out = Vec::new();
    for (field, keys) in [
        (
            "data",
            o.data
                .iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>(),
        ),
        (
            "binaryData",
            o.binary_data
                .iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect(),
        ),
    ] {
        for k in keys {
            if !ok(&k) {
                out.push(FieldError::invalid(
                    format!("{field}[{k}]"),
                    quoted(&k),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
    out
}

// ----- claims -------------------------------------------------------------------------------

const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn claim_problems(s: &core::PersistentVolumeClaimSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    let modes = s.access_modes.clone().unwrap_or_default();
    if modes.is_empty() {
        out.push(FieldError::required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for m in &modes {
        if !ACCESS_MODES.contains(&m.as_str()) {
            out.push(FieldError::not_supported(
                "spec.accessModes",
                m,
                &ACCESS_MODES,
            ));
        }
    }
    let storage = s
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    match storage {
        None => out.push(FieldError::required("spec.resources[storage]", "")),
        Some(q) => {
            if upgraded_events::quantity::bytes(&q.0).is_err() {
                out.push(FieldError::invalid("spec.resources.requests[storage]", quoted(&q.0), "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"));
            }
        }
    }
    out
}

fn create_claim(w: &mut World, ns: &str, body: &Value, fv: FieldValidation) -> Answer {
    let res = Res::Claim;
    let (mut o, warn): (core::PersistentVolumeClaim, _) = decode(res, body, fv)?;
    let mut errors = create_meta(w, res, Some(ns), &mut o.metadata)?;
    let name = o.metadata.name.clone().unwrap_or_default();
    let default_class = w.default_storage_class();
    let spec = o.spec.get_or_insert_with(Default::default);
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    if spec.storage_class_name.is_none() {
        spec.storage_class_name = default_class;
    }
    errors.extend(claim_problems(spec));
    invalid(res, &name, errors)?;
    if w.claims.contains_key(&(ns.to_string(), name.clone())) {
        return Err(exists(res, &name));
    }
    w.add_claim(o);
    Ok((object_json(w, res, ns, &name)?, warn))
}

fn update_claim(w: &mut World, ns: &str, name: &str, body: &Value, fv: FieldValidation) -> Answer {
    let res = Res::Claim;
    let key = (ns.to_string(), name.to_string());
    let old = w
        .claims
        .get(&key)
        .cloned()
        .ok_or_else(|| not_found(res, name))?;
    let (mut o, warn): (core::PersistentVolumeClaim, _) = decode(res, body, fv)?;
    same_name(&o.metadata, name)?;
    same_namespace(&o.metadata, ns)?;
    let old_spec = old.spec.clone().unwrap_or_default();
    let spec = o.spec.get_or_insert_with(Default::default);
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    if spec.storage_class_name.is_none() {
        spec.storage_class_name = old_spec.storage_class_name.clone();
    }
    if spec.volume_name.is_none() {
        spec.volume_name = old_spec.volume_name.clone();
    }
    let mut errors = claim_problems(spec);
    let without_requests = |s: &core::PersistentVolumeClaimSpec| {
        let mut s = s.clone();
        s.resources = None;
        s.volume_attributes_class_name = None;
        serde_json::to_value(s).unwrap_or_default()
    };
    if without_requests(spec) != without_requests(&old_spec) {
        errors.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    if spec.resources != old_spec.resources {
        let expands = w
            .storage_classes
            .get(old_spec.storage_class_name.as_deref().unwrap_or_default())
            .is_some_and(|c| c.allow_volume_expansion == Some(true));
        if !expands {
            errors.push(FieldError::forbidden(
                "spec.resources.requests.storage",
                "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
            ));
        }
    }
    invalid(res, name, errors)?;
    o.status = old.status.clone();
    w.replace_kept(
        res,
        &key,
        (ns, name),
        o,
        |o| &mut o.metadata,
        |w| &mut w.claims,
    );
    Ok((object_json(w, res, ns, name)?, warn))
}
