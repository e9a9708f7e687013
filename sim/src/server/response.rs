//! Answers as the apiserver writes them: JSON bodies and `Status` failures (NotFound,
//! BadRequest, MethodNotAllowed, Invalid) with their codes and reasons.

#![allow(clippy::result_large_err)]

use super::*;

pub(super) fn json_response(status: StatusCode, v: &impl Serialize) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub(super) fn ok(v: &impl Serialize) -> Response {
    json_response(StatusCode::OK, v)
}

/// A `Status` failure as the apiserver writes it.
pub(super) fn status(
    code: StatusCode,
    reason: &str,
    message: String,
    details: Option<meta::StatusDetails>,
) -> Response {
    let s = meta::Status {
        code: Some(i32::from(code.as_u16())),
        details,
        message: Some(message),
        metadata: meta::ListMeta::default(),
        reason: Some(reason.into()),
        status: Some("Failure".into()),
    };
    json_response(code, &s)
}

pub(super) fn not_found(kind: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{kind} \"{name}\" not found"),
        Some(meta::StatusDetails {
            name: Some(name.into()),
            kind: Some(kind.into()),
            ..Default::default()
        }),
    )
}

pub(super) fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

pub(super) fn method_not_allowed() -> Response {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource".into(),
        None,
    )
}

pub(super) fn model_error(e: ModelError) -> Response {
    match e {
        ModelError::NotFound { kind, name } => not_found(kind, &name),
        ModelError::Invalid(m) => status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", m, None),
        ModelError::Unavailable(m) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            m,
            None,
        ),
    }
}
