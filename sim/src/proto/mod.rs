//! Reads the Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`) into the JSON
//! a client would have sent: kubectl's generators (`kubectl create deployment|job|pdb|
//! namespace|service|configmap`) send their objects this way and never fall back to JSON.
//!
//! The envelope is the apiserver's: the magic `k8s\0`, then a `runtime.Unknown` whose
//! `typeMeta` names the kind and whose `raw` holds the object. How to read each message is the
//! data in `table.rs`, generated from k8s-pb (tags, wire types) and k8s-openapi (JSON names) by
//! `scripts/gen-proto-table`. The sim only reads protobuf; it answers in JSON, which every
//! client accepts.
//!
//! Go's protobuf encoder writes every field of a non-pointer type, set or not, while its JSON
//! encoder leaves the empty ones out (`omitempty`). So empty strings, zero times, and zero
//! numbers and `false` are left out, except for the fields in [`ZERO_MEANS_SOMETHING`] (Go
//! pointers, whose zero differs from unset: `replicas: 0`, `backoffLimit: 0`, `runAsUser: 0`).
//! Empty objects are kept, as Go writes them (`resources: {}`). A field the table does not know
//! is an error naming it, never dropped.

use serde_json::{Map, Value};

mod table;

/// How a field is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    String,
    Int32,
    Int64,
    Bool,
    Bytes,
    Double,
    /// A nested message, by its id in the table (`api.core.v1.PodSpec`).
    Message(&'static str),
    MapString,
    MapBytes,
    MapMessage(&'static str),
}

/// One field of a message: its tag, its JSON name (`""`: a Go struct embedded in its parent,
/// whose fields JSON writes inline) and its encoding.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub tag: u32,
    pub json: &'static str,
    pub ty: Ty,
    pub repeated: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

/// The content type of the Kubernetes protobuf encoding.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Number and boolean fields whose zero is not the same as unset (pointers in the Go types):
/// kept when they are zero. Every other zero number and `false` is left out, as Go's JSON does.
pub const ZERO_MEANS_SOMETHING: &[&str] = &[
    "activeDeadlineSeconds",
    "allocateLoadBalancerNodePorts",
    "allowPrivilegeEscalation",
    "automountServiceAccountToken",
    "backoffLimit",
    "backoffLimitPerIndex",
    "completions",
    "defaultMode",
    "deletionGracePeriodSeconds",
    "enableServiceLinks",
    "expirationSeconds",
    "failedJobsHistoryLimit",
    "fsGroup",
    "gracePeriodSeconds",
    "hostUsers",
    "manualSelector",
    "maxFailedIndexes",
    "mode",
    "parallelism",
    "priority",
    "privileged",
    "progressDeadlineSeconds",
    "readOnlyRootFilesystem",
    "replicas",
    "revisionHistoryLimit",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "startingDeadlineSeconds",
    "successfulJobsHistoryLimit",
    "suspend",
    "terminationGracePeriodSeconds",
    "ttlSecondsAfterFinished",
];

/// Nested messages deeper than this are refused (a hostile body cannot exhaust the stack).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("the body does not start with the Kubernetes protobuf magic \"k8s\\0\"")]
    NoMagic,
    #[error("the protobuf body ends inside a field (at byte {0})")]
    Truncated(usize),
    #[error("the protobuf body is not of a kind the sim reads: {api_version} {kind}")]
    UnknownKind { api_version: String, kind: String },
    #[error("field {tag} of {message} is not one the sim knows (wire type {wire})")]
    UnknownField {
        message: &'static str,
        tag: u32,
        wire: u8,
    },
    #[error("field {json} of {message} has wire type {wire}, not the one its type is written with")]
    WireType {
        message: &'static str,
        json: &'static str,
        wire: u8,
    },
    #[error("a string in the protobuf body is not UTF-8 (field {0})")]
    Utf8(&'static str),
    #[error("the protobuf body nests messages more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("the protobuf body's {0} is not valid")]
    Invalid(&'static str),
}

/// The object in a protobuf request body, as JSON (with its `apiVersion` and `kind`).
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let raw = body.strip_prefix(b"k8s\0").ok_or(ProtoError::NoMagic)?;
    let unknown = read_fields(raw, 0)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut object = &[][..];
    for (tag, wire) in unknown {
        match (tag, wire) {
            (1, Wire::Bytes(meta)) => {
                for (t, w) in read_fields(meta, 0)? {
                    match (t, w) {
                        (1, Wire::Bytes(b)) => api_version = utf8(b, "typeMeta.apiVersion")?,
                        (2, Wire::Bytes(b)) => kind = utf8(b, "typeMeta.kind")?,
                        _ => return Err(ProtoError::Invalid("typeMeta")),
                    }
                }
            }
            (2, Wire::Bytes(b)) => object = b,
            // contentEncoding, contentType: empty for an object encoded as protobuf.
            (3 | 4, Wire::Bytes(_)) => {}
            _ => return Err(ProtoError::Invalid("envelope")),
        }
    }
    let name = message_of(&api_version, &kind).ok_or_else(|| ProtoError::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let mut v = read_message(object, name, 0)?;
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), Value::String(api_version));
        m.insert("kind".into(), Value::String(kind));
    }
    Ok(v)
}

/// The table's id of `kind` in `apiVersion` (`apps/v1` `Deployment` →
/// `api.apps.v1.Deployment`).
fn message_of(api_version: &str, kind: &str) -> Option<&'static str> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let group = match group {
        "" => "core",
        g => g.strip_suffix(".k8s.io").unwrap_or(g),
    };
    let candidates = [
        format!("api.{group}.{version}.{kind}"),
        format!("apimachinery.pkg.apis.meta.{version}.{kind}"),
    ];
    candidates
        .iter()
        .find_map(|c| lookup(c).map(|m| m.name))
        .filter(|_| !kind.is_empty())
}

fn lookup(name: &str) -> Option<&'static Message> {
    let i = table::MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()?;
    table::MESSAGES.get(i)
}

/// A field as it is on the wire.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    /// No field of the kinds read is a 32-bit fixed; read past, refused as a wrong wire type.
    Fixed32,
}

impl Wire<'_> {
    fn code(&self) -> u8 {
        match self {
            Wire::Varint(_) => 0,
            Wire::Fixed64(_) => 1,
            Wire::Bytes(_) => 2,
            Wire::Fixed32 => 5,
        }
    }
}

fn varint(b: &[u8], at: &mut usize) -> Result<u64, ProtoError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or(ProtoError::Truncated(*at))?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ProtoError::Invalid("varint"))
}

/// Every field of one message's bytes, in order.
fn read_fields(b: &[u8], depth: usize) -> Result<Vec<(u32, Wire<'_>)>, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep);
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let key = varint(b, &mut at)?;
        let tag = u32::try_from(key >> 3).map_err(|_| ProtoError::Invalid("field key"))?;
        let wire = match key & 7 {
            0 => Wire::Varint(varint(b, &mut at)?),
            1 => {
                let bytes = b.get(at..at + 8).ok_or(ProtoError::Truncated(at))?;
                at += 8;
                Wire::Fixed64(u64::from_le_bytes(
                    bytes.try_into().map_err(|_| ProtoError::Truncated(at))?,
                ))
            }
            2 => {
                let len =
                    usize::try_from(varint(b, &mut at)?).map_err(|_| ProtoError::Truncated(at))?;
                let end = at.checked_add(len).ok_or(ProtoError::Truncated(at))?;
                let bytes = b.get(at..end).ok_or(ProtoError::Truncated(at))?;
                at = end;
                Wire::Bytes(bytes)
            }
            5 => {
                b.get(at..at + 4).ok_or(ProtoError::Truncated(at))?;
                at += 4;
                Wire::Fixed32
            }
            _ => return Err(ProtoError::Invalid("wire type")),
        };
        out.push((tag, wire));
    }
    Ok(out)
}

fn utf8(b: &[u8], field: &'static str) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Utf8(field))
}

/// `name`'s bytes as the JSON object Go would write.
fn read_message(b: &[u8], name: &'static str, depth: usize) -> Result<Value, ProtoError> {
    if let Some(v) = special(b, name, depth)? {
        return Ok(v);
    }
    let message = lookup(name).ok_or(ProtoError::Invalid("message table"))?;
    let mut out = Map::new();
    for (tag, wire) in read_fields(b, depth)? {
        let field =
            message
                .fields
                .iter()
                .find(|f| f.tag == tag)
                .ok_or(ProtoError::UnknownField {
                    message: message.name,
                    tag,
                    wire: wire.code(),
                })?;
        let wrong = || ProtoError::WireType {
            message: message.name,
            json: field.json,
            wire: wire.code(),
        };
        if field.json.is_empty() {
            // A Go struct embedded in its parent: its fields are the parent's in JSON.
            let (Ty::Message(inner), Wire::Bytes(bytes)) = (field.ty, wire) else {
                return Err(wrong());
            };
            if let Value::Object(m) = read_message(bytes, inner, depth + 1)? {
                out.extend(m);
            }
            continue;
        }
        match field.ty {
            Ty::MapString | Ty::MapBytes | Ty::MapMessage(_) => {
                let Wire::Bytes(entry) = wire else {
                    return Err(wrong());
                };
                let (k, v) = map_entry(entry, field, depth)?;
                let map = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = map {
                    m.insert(k, v);
                }
            }
            _ if field.repeated => {
                let values = scalars_or_one(wire, field, message.name, depth)?;
                let list = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = list {
                    a.extend(values);
                }
            }
            _ => {
                let v = single(wire, field, message.name, depth)?;
                match v {
                    // Go's JSON leaves out an empty string and a zero time.
                    Value::Null => {
                        out.remove(field.json);
                    }
                    Value::String(s) if s.is_empty() => {
                        out.remove(field.json);
                    }
                    Value::Bool(false) if !ZERO_MEANS_SOMETHING.contains(&field.json) => {
                        out.remove(field.json);
                    }
                    Value::Number(n)
                        if n.as_f64() == Some(0.0)
                            && !ZERO_MEANS_SOMETHING.contains(&field.json) =>
                    {
                        out.remove(field.json);
                    }
                    v => {
                        out.insert(field.json.to_string(), v);
                    }
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// One value of a singular field.
fn single(
    wire: Wire<'_>,
    field: &Field,
    message: &'static str,
    depth: usize,
) -> Result<Value, ProtoError> {
    let wrong = || ProtoError::WireType {
        message,
        json: field.json,
        wire: wire.code(),
    };
    Ok(match (field.ty, wire) {
        (Ty::String, Wire::Bytes(b)) => Value::String(utf8(b, field.json)?),
        (Ty::Bytes, Wire::Bytes(b)) => Value::String(base64(b)),
        (Ty::Int32, Wire::Varint(v)) => Value::from(v as i64 as i32),
        (Ty::Int64, Wire::Varint(v)) => Value::from(v as i64),
        (Ty::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (Ty::Double, Wire::Fixed64(v)) => {
            serde_json::Number::from_f64(f64::from_bits(v)).map_or(Value::Null, Value::Number)
        }
        (Ty::Message(inner), Wire::Bytes(b)) => read_message(b, inner, depth + 1)?,
        _ => return Err(wrong()),
    })
}

/// The values of one occurrence of a repeated field: one message or string, or (packed) many
/// numbers.
fn scalars_or_one(
    wire: Wire<'_>,
    field: &Field,
    message: &'static str,
    depth: usize,
) -> Result<Vec<Value>, ProtoError> {
    match (field.ty, wire) {
        (Ty::Int32 | Ty::Int64 | Ty::Bool, Wire::Bytes(packed)) => {
            let mut at = 0;
            let mut out = Vec::new();
            while at < packed.len() {
                let v = varint(packed, &mut at)?;
                out.push(single(Wire::Varint(v), field, message, depth)?);
            }
            Ok(out)
        }
        // An empty string in a list is kept: the list's length is data.
        (Ty::String, Wire::Bytes(b)) => Ok(vec![Value::String(utf8(b, field.json)?)]),
        _ => Ok(vec![single(wire, field, message, depth)?]),
    }
}

fn map_entry(entry: &[u8], field: &Field, depth: usize) -> Result<(String, Value), ProtoError> {
    let mut key = String::new();
    let mut value = match field.ty {
        Ty::MapMessage(_) => Value::Object(Map::new()),
        _ => Value::String(String::new()),
    };
    for (tag, wire) in read_fields(entry, depth + 1)? {
        match (tag, wire, field.ty) {
            (1, Wire::Bytes(b), _) => key = utf8(b, field.json)?,
            (2, Wire::Bytes(b), Ty::MapString) => value = Value::String(utf8(b, field.json)?),
            (2, Wire::Bytes(b), Ty::MapBytes) => value = Value::String(base64(b)),
            (2, Wire::Bytes(b), Ty::MapMessage(inner)) => {
                value = read_message(b, inner, depth + 1)?
            }
            _ => return Err(ProtoError::Invalid("map entry")),
        }
    }
    Ok((key, value))
}

/// The messages whose JSON is not an object of their fields.
fn special(b: &[u8], name: &str, depth: usize) -> Result<Option<Value>, ProtoError> {
    let fields = || read_fields(b, depth);
    Ok(Some(match name {
        "apimachinery.pkg.api.resource.Quantity" => {
            let mut s = String::new();
            for (tag, wire) in fields()? {
                if let (1, Wire::Bytes(v)) = (tag, wire) {
                    s = utf8(v, "quantity")?;
                }
            }
            Value::String(s)
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            let (mut ty, mut int, mut text) = (0, 0i64, String::new());
            for (tag, wire) in fields()? {
                match (tag, wire) {
                    (1, Wire::Varint(v)) => ty = v,
                    (2, Wire::Varint(v)) => int = i64::from(v as i64 as i32),
                    (3, Wire::Bytes(v)) => text = utf8(v, "intOrString")?,
                    _ => return Err(ProtoError::Invalid("IntOrString")),
                }
            }
            if ty == 1 {
                Value::String(text)
            } else {
                Value::from(int)
            }
        }
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let (mut seconds, mut nanos) = (0i64, 0i64);
            for (tag, wire) in fields()? {
                match (tag, wire) {
                    (1, Wire::Varint(v)) => seconds = v as i64,
                    (2, Wire::Varint(v)) => nanos = i64::from(v as i64 as i32),
                    _ => return Err(ProtoError::Invalid("Time")),
                }
            }
            if seconds == 0 && nanos == 0 {
                // Go's zero time is written as null.
                Value::Null
            } else {
                let micro = name.ends_with("MicroTime");
                Value::String(timestamp(seconds, nanos, micro)?)
            }
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            let mut ns = 0i64;
            for (tag, wire) in fields()? {
                if let (1, Wire::Varint(v)) = (tag, wire) {
                    ns = v as i64;
                }
            }
            Value::String(go_duration(ns))
        }
        "apimachinery.pkg.apis.meta.v1.FieldsV1" | "apimachinery.pkg.runtime.RawExtension" => {
            let mut raw: &[u8] = &[];
            for (tag, wire) in fields()? {
                if let (1, Wire::Bytes(v)) = (tag, wire) {
                    raw = v;
                }
            }
            if raw.is_empty() {
                Value::Null
            } else if raw.starts_with(b"k8s\0") {
                decode(raw)?
            } else {
                serde_json::from_slice(raw).map_err(|_| ProtoError::Invalid("raw extension"))?
            }
        }
        _ => return Ok(None),
    }))
}

fn timestamp(seconds: i64, nanos: i64, micro: bool) -> Result<String, ProtoError> {
    let t = k8s_openapi::jiff::Timestamp::new(seconds, nanos as i32)
        .map_err(|_| ProtoError::Invalid("time"))?;
    let whole = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Ok(if micro {
        format!("{whole}.{:06}Z", nanos / 1000)
    } else {
        format!("{whole}Z")
    })
}

/// Go's `time.Duration.String()`: `1h2m3s`, `1.5s`, `300ms`, `0s`.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    if ns < 1_000_000_000 {
        let (v, unit) = match ns {
            n if n < 1_000 => return format!("{sign}{n}ns"),
            n if n < 1_000_000 => (n as f64 / 1e3, "µs"),
            n => (n as f64 / 1e6, "ms"),
        };
        return format!("{sign}{}{unit}", trim(v));
    }
    let (h, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let s = rest as f64 / 1e9;
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim(s)));
    out
}

fn trim(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn base64(b: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (u32::from(c) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_its_messages_exist() {
        let names: Vec<&str> = table::MESSAGES.iter().map(|m| m.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "binary search needs the table sorted");
        for m in table::MESSAGES {
            for f in m.fields {
                if let Ty::Message(inner) | Ty::MapMessage(inner) = f.ty {
                    let known = lookup(inner).is_some()
                        || special(&[], inner, 0).is_ok_and(|v| v.is_some());
                    assert!(
                        known,
                        "{}.{} refers to {inner}, not in the table",
                        m.name, f.json
                    );
                }
            }
        }
    }

    #[test]
    fn go_durations_read_like_go() {
        for (ns, want) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (300_000_000, "300ms"),
            (3_723_000_000_000, "1h2m3s"),
            (90_000_000_000, "1m30s"),
            (-2_000_000_000, "-2s"),
        ] {
            assert_eq!(go_duration(ns), want);
        }
    }

    #[test]
    fn base64_pads_as_go_does() {
        for (raw, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw), want);
        }
    }

    #[test]
    fn damaged_bodies_are_errors_not_panics() {
        assert_eq!(decode(b"{\"kind\":\"Pod\"}"), Err(ProtoError::NoMagic));
        assert!(matches!(
            decode(b"k8s\0\x0a\x05\x0a"),
            Err(ProtoError::Truncated(_))
        ));
        // A length that runs past the end.
        assert!(decode(b"k8s\0\x12\xff\xff\xff\xff\x0f").is_err());
        // An unknown kind.
        let body = b"k8s\0\x0a\x0c\x0a\x02v1\x12\x06Widget\x12\x00";
        assert!(matches!(decode(body), Err(ProtoError::UnknownKind { .. })));
        // Messages nested past the limit.
        let mut nested = Vec::new();
        for _ in 0..200 {
            let mut outer = vec![0x12];
            outer.extend(len_prefix(&nested));
            nested = outer;
        }
        assert!(read_message(&nested, "api.core.v1.Pod", 0).is_err());
    }

    fn len_prefix(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = b.len();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(b);
        out
    }
}
