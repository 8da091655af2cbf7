//! Idempotency keys: canonical JSON, SHA-256, and picking payload parts by JSON pointer.

use std::fmt::Write as _;

use ring::digest;
use serde_json::Value;

/// The canonical JSON text of `value`: object keys sorted by their UTF-8 bytes, no
/// whitespace, strings and numbers as `serde_json` writes them. Equal payloads give equal
/// text whatever their key order (and whatever `serde_json` features other crates enable).
///
/// ```
/// use spoor_sdk::idempotency::canonical_json;
///
/// let a = serde_json::json!({"b": 1, "a": {"d": [true, null], "c": "x"}});
/// assert_eq!(canonical_json(&a), r#"{"a":{"c":"x","d":[true,null]},"b":1}"#);
/// ```
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
        // Scalars have one spelling in serde_json's writer.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Lowercase hex SHA-256 of `text`.
pub fn hash_hex(text: &str) -> String {
    let digest = digest::digest(&digest::SHA256, text.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest.as_ref() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The part of `payload` to hash: the whole payload when `pointers` is empty, the value at
/// the one pointer, or the array of the values at several. Err names the first pointer
/// that is missing or null.
pub(crate) fn select(payload: &Value, pointers: &[String]) -> Result<Value, String> {
    let pick = |pointer: &String| match payload.pointer(pointer) {
        Some(Value::Null) | None => Err(pointer.clone()),
        Some(value) => Ok(value.clone()),
    };
    match pointers {
        [] => Ok(payload.clone()),
        [one] => pick(one),
        many => many
            .iter()
            .map(pick)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_ignores_key_order_and_escapes_keys() {
        let a: Value =
            serde_json::from_str(r#"{"z":1,"a":[{"y":2,"x":"\n"}],"é":null}"#).expect("valid JSON");
        let b: Value = serde_json::from_str(r#"{ "é": null, "a": [ {"x":"\n", "y":2} ], "z": 1 }"#)
            .expect("valid JSON");
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":[{"x":"\n","y":2}],"z":1,"é":null}"#
        );
    }

    #[test]
    fn sha256_matches_the_known_vector() {
        assert_eq!(
            hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn select_picks_parts_and_names_missing_ones() {
        let payload = json!({"order": {"id": 7, "note": null}, "user": "u1"});
        assert_eq!(select(&payload, &[]), Ok(payload.clone()));
        assert_eq!(select(&payload, &["/order/id".into()]), Ok(json!(7)));
        assert_eq!(
            select(&payload, &["/user".into(), "/order/id".into()]),
            Ok(json!(["u1", 7]))
        );
        assert_eq!(
            select(&payload, &["/order/note".into()]),
            Err("/order/note".into())
        );
        assert_eq!(
            select(&payload, &["/user".into(), "/nope".into()]),
            Err("/nope".into())
        );
    }
}
