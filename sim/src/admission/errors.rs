//! The apiserver's refusals, typed: each becomes a `Status` with its code, reason and message, as
//! kubectl and client libraries expect them (`AlreadyExists`, `Conflict`, a 422 `Invalid` with
//! one cause per field, ...).

use serde_json::{Value, json};

/// What is wrong with one field, in the apiserver's words (`field.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Required,
    /// The value as Go prints it (`"Bad_Name"`, `-1`, `map[string]string{"app":"x"}`).
    Invalid(String),
    Forbidden,
    /// The value, and the values that are supported.
    NotSupported(String, Vec<&'static str>),
    Duplicate(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: Problem,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            problem: Problem::Required,
            detail: detail.into(),
        }
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            field: field.into(),
            problem: Problem::Invalid(value.into()),
            detail: detail.into(),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            problem: Problem::Forbidden,
            detail: detail.into(),
        }
    }

    pub fn not_supported(
        field: impl Into<String>,
        value: &str,
        supported: &[&'static str],
    ) -> FieldError {
        FieldError {
            field: field.into(),
            problem: Problem::NotSupported(quoted(value), supported.to_vec()),
            detail: String::new(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: &str) -> FieldError {
        FieldError {
            field: field.into(),
            problem: Problem::Duplicate(quoted(value)),
            detail: String::new(),
        }
    }

    /// The message without the field (a cause's `message`).
    fn body(&self) -> String {
        let with = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        match &self.problem {
            Problem::Required => with("Required value".into()),
            Problem::Invalid(v) => with(format!("Invalid value: {v}")),
            Problem::Forbidden => with("Forbidden".into()),
            Problem::NotSupported(v, supported) => {
                let list: Vec<String> = supported.iter().map(|s| quoted(s)).collect();
                format!(
                    "Unsupported value: {v}: supported values: {}",
                    list.join(", ")
                )
            }
            Problem::Duplicate(v) => format!("Duplicate value: {v}"),
        }
    }

    fn reason(&self) -> &'static str {
        match self.problem {
            Problem::Required => "FieldValueRequired",
            Problem::Invalid(_) => "FieldValueInvalid",
            Problem::Forbidden => "FieldValueForbidden",
            Problem::NotSupported(..) => "FieldValueNotSupported",
            Problem::Duplicate(_) => "FieldValueDuplicate",
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// A string as Go's `%q` prints it.
pub fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// `resource` as the apiserver names it (`deployments.apps`).
    NotFound {
        resource: String,
        name: String,
    },
    AlreadyExists {
        resource: String,
        name: String,
    },
    /// 409: a stale resourceVersion or uid precondition.
    Conflict {
        resource: String,
        name: String,
        detail: String,
    },
    /// 422, one cause per field.
    Invalid {
        kind: String,
        group: String,
        name: String,
        causes: Vec<FieldError>,
    },
    BadRequest(String),
    Forbidden {
        resource: String,
        name: String,
        detail: String,
    },
    MethodNotAllowed,
    UnsupportedMediaType(String),
    NotAcceptable(String),
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Forbidden { .. } => 403,
            ApiError::MethodNotAllowed => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::NotAcceptable(_) => 406,
            ApiError::Internal(_) => 500,
        }
    }

    /// The `Status` body, as the apiserver writes it.
    pub fn status(&self) -> Value {
        let split = |resource: &str| -> (String, String) {
            match resource.split_once('.') {
                Some((plural, group)) => (group.to_string(), plural.to_string()),
                None => (String::new(), resource.to_string()),
            }
        };
        let (reason, message, details) = match self {
            ApiError::NotFound { resource, name } => {
                let (group, kind) = split(resource);
                (
                    "NotFound",
                    format!("{resource} \"{name}\" not found"),
                    Some(json!({"name": name, "group": group, "kind": kind})),
                )
            }
            ApiError::AlreadyExists { resource, name } => {
                let (group, kind) = split(resource);
                (
                    "AlreadyExists",
                    format!("{resource} \"{name}\" already exists"),
                    Some(json!({"name": name, "group": group, "kind": kind})),
                )
            }
            ApiError::Conflict {
                resource,
                name,
                detail,
            } => {
                let (group, kind) = split(resource);
                (
                    "Conflict",
                    format!("Operation cannot be fulfilled on {resource} \"{name}\": {detail}"),
                    Some(json!({"name": name, "group": group, "kind": kind})),
                )
            }
            ApiError::Invalid {
                kind,
                group,
                name,
                causes,
            } => {
                let qualified = if group.is_empty() {
                    kind.clone()
                } else {
                    format!("{kind}.{group}")
                };
                let list: Vec<String> = causes.iter().map(|c| c.to_string()).collect();
                let all = if list.len() == 1 {
                    list[0].clone()
                } else {
                    format!("[{}]", list.join(", "))
                };
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason(), "message": c.body(), "field": c.field}))
                    .collect();
                (
                    "Invalid",
                    format!("{qualified} \"{name}\" is invalid: {all}"),
                    Some(json!({"name": name, "group": group, "kind": kind, "causes": causes})),
                )
            }
            ApiError::BadRequest(m) => ("BadRequest", m.clone(), None),
            ApiError::Forbidden {
                resource,
                name,
                detail,
            } => {
                let (group, kind) = split(resource);
                (
                    "Forbidden",
                    format!("{resource} \"{name}\" is forbidden: {detail}"),
                    Some(json!({"name": name, "group": group, "kind": kind})),
                )
            }
            ApiError::MethodNotAllowed => (
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".into(),
                None,
            ),
            ApiError::UnsupportedMediaType(m) => ("UnsupportedMediaType", m.clone(), None),
            ApiError::NotAcceptable(m) => ("NotAcceptable", m.clone(), None),
            ApiError::Internal(m) => (
                "InternalError",
                format!("Internal error occurred: {m}"),
                None,
            ),
        };
        let mut v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": self.code(),
        });
        if let Some(d) = details {
            v["details"] = d;
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            self.status()["message"].as_str().unwrap_or_default()
        )
    }
}

impl std::error::Error for ApiError {}
