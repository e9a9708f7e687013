//! The published JSON form of records (`schemas/record.schema.json`), checked with a JSON
//! Schema validator: what `events`, NATS, exports and webhooks carry must match it.

use std::path::Path;

/// A validator of `schemas/record.schema.json`.
pub fn validator() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/record.schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

/// Panics naming the first error when `record` does not match the schema.
pub fn assert_valid(v: &jsonschema::Validator, record: &serde_json::Value) {
    if let Some(e) = v.iter_errors(record).next() {
        panic!(
            "record does not match schemas/record.schema.json: {e} at {}\n{record}",
            e.instance_path
        );
    }
}
