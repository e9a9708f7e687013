//! Spans of the log (`upgraded_events::trace`) over OTLP/HTTP (protobuf), for the daemon's
//! trace consumer and `upgradectl export --otlp`; and the HTTPS client both use (webhooks
//! too). The exporter is `opentelemetry-otlp`'s, posting through hyper with rustls and the
//! system's roots (no reqwest: see ../shared/LAB-NOTES.md on its runtime traps).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use upgraded_events::trace::{Span, SpanKind as Kind, Value};

pub use opentelemetry_otlp::SpanExporter;

/// The connector every outgoing HTTP(S) request of ours uses.
pub type Connector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint {endpoint:?}: {problem}")]
    Endpoint { endpoint: String, problem: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("sending spans to {endpoint}: {problem}")]
    Export { endpoint: String, problem: String },
}

/// HTTP and HTTPS (rustls with ring, the system's roots; plain HTTP when none are found, so
/// loopback collectors still work on a machine without CA certificates).
pub fn connector() -> Result<Connector, OtlpError> {
    use hyper_rustls::ConfigBuilderExt;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let versions = || {
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| OtlpError::Tls(e.to_string()))
    };
    let config = match versions()?.with_native_roots() {
        Ok(b) => b.with_no_client_auth(),
        // No CA certificates on this machine: plain HTTP still works.
        Err(_) => versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build())
}

/// Where traces go: the signal path `/v1/traces` is added to a base endpoint
/// (`http://collector:4318`), as `OTEL_EXPORTER_OTLP_ENDPOINT` means it; an endpoint that
/// already names it is used as it is.
pub fn traces_url(endpoint: &str) -> Result<String, OtlpError> {
    let e = endpoint.trim();
    let bad = |problem: &str| OtlpError::Endpoint {
        endpoint: endpoint.to_string(),
        problem: problem.to_string(),
    };
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("names no host"));
    }
    if e.contains(char::is_whitespace) {
        return Err(bad("contains whitespace"));
    }
    let e = e.trim_end_matches('/');
    Ok(if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    })
}

/// An exporter to `endpoint` whose requests give up after `timeout`.
pub fn exporter(endpoint: &str, timeout: Duration) -> Result<SpanExporter, OtlpError> {
    let url = traces_url(endpoint)?;
    let client = opentelemetry_http::hyper::HyperClient::new(connector()?, timeout, None);
    let mut exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(timeout)
        .build()
        .map_err(|e| OtlpError::Endpoint {
            endpoint: url,
            problem: e.to_string(),
        })?;
    exporter.set_resource(&resource());
    Ok(exporter)
}

/// The process that produced the spans, as every span's resource says it.
pub fn resource() -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "upgraded"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build()
}

/// Sends `spans` in one request.
pub async fn send(
    exporter: &SpanExporter,
    endpoint: &str,
    spans: &[Span],
) -> Result<(), OtlpError> {
    if spans.is_empty() {
        return Ok(());
    }
    let batch = spans.iter().map(span_data).collect();
    exporter.export(batch).await.map_err(|e| {
        let mut problem = e.to_string();
        if problem.contains("network error") {
            problem.push_str(" (is an OTLP/HTTP collector listening there?)");
        }
        OtlpError::Export {
            endpoint: endpoint.to_string(),
            problem,
        }
    })
}

fn time(t: upgraded_events::Timestamp) -> SystemTime {
    let ms = u64::try_from(t.0).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn kv(k: &'static str, v: &Value) -> KeyValue {
    match v {
        Value::Str(s) => KeyValue::new(k, s.clone()),
        Value::Int(n) => KeyValue::new(k, *n),
    }
}

/// The span context a derived span has (sampled; never remote).
pub fn context(trace: [u8; 16], span: [u8; 8]) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace),
        SpanId::from_bytes(span),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

/// The SDK's form of a span of the log.
pub fn span_data(s: &Span) -> SpanData {
    SpanData {
        span_context: context(s.trace_id, s.span_id),
        parent_span_id: s.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: false,
        span_kind: match s.kind {
            Kind::Server => SpanKind::Server,
            Kind::Internal => SpanKind::Internal,
        },
        name: Cow::Owned(s.name.clone()),
        start_time: time(s.start),
        end_time: time(s.end),
        attributes: s.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
        dropped_attributes_count: 0,
        events: {
            let mut e = SpanEvents::default();
            e.events = s
                .events
                .iter()
                .map(|ev| {
                    opentelemetry::trace::Event::new(
                        ev.name,
                        time(ev.at),
                        ev.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                        0,
                    )
                })
                .collect();
            e
        },
        links: {
            let mut l = SpanLinks::default();
            l.links = s
                .links
                .iter()
                .map(|(t, sp)| Link::new(context(*t, *sp), Vec::new(), 0))
                .collect();
            l
        },
        status: match &s.error {
            None => Status::Ok,
            Some(m) => Status::error(m.clone()),
        },
        instrumentation_scope: InstrumentationScope::builder("upgraded")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_signal_path_once_and_bad_ones_are_refused() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").ok().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("https://otel.example/v1/traces/")
                .ok()
                .as_deref(),
            Some("https://otel.example/v1/traces")
        );
        for bad in ["127.0.0.1:4318", "http://", "ftp://x", "http://a b"] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }
}
