//! What makes two requests for approval "the same request": a playbook asking again for
//! what was decided is answered by that decision, anything else is a new request. The
//! store keeps the hash beside each approval and looks requests up by it.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What identifies "this exact request": the playbook, the incident, the action, its target
/// and its parameters (object keys in sorted order, so `#{a, b}` and `#{b, a}` agree).
pub fn request_hash(
    playbook: &str,
    incident: Option<&str>,
    action: &str,
    target: &str,
    params: &Value,
) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: std::collections::BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, canonical(v))).collect();
                json!(sorted)
            }
            Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let request = json!([playbook, incident, action, target, canonical(params)]);
    hex::encode(Sha256::digest(request.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_request_hashes_alike_whatever_the_key_order() {
        let a = request_hash(
            "p",
            Some("i"),
            "breaker.reset",
            "stripe",
            &json!({"a": 1, "b": {"y": 2, "x": 1}}),
        );
        let b = request_hash(
            "p",
            Some("i"),
            "breaker.reset",
            "stripe",
            &json!({"b": {"x": 1, "y": 2}, "a": 1}),
        );
        assert_eq!(a, b);
        for other in [
            request_hash(
                "q",
                Some("i"),
                "breaker.reset",
                "stripe",
                &json!({"a": 1, "b": {"y": 2, "x": 1}}),
            ),
            request_hash(
                "p",
                None,
                "breaker.reset",
                "stripe",
                &json!({"a": 1, "b": {"y": 2, "x": 1}}),
            ),
            request_hash(
                "p",
                Some("i"),
                "breaker.reset",
                "paypal",
                &json!({"a": 1, "b": {"y": 2, "x": 1}}),
            ),
            request_hash(
                "p",
                Some("i"),
                "breaker.reset",
                "stripe",
                &json!({"a": 2, "b": {"y": 2, "x": 1}}),
            ),
        ] {
            assert_ne!(a, other);
        }
    }
}
