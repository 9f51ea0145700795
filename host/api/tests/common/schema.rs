//! A small structural JSON-schema checker for the subset `openapi.json` uses:
//! `$ref` (local), `type` (string or list), `properties`, `required`,
//! `additionalProperties: false`, `items`, `enum`, `minimum`, `maximum`,
//! `oneOf`, `pattern` (only `^`-anchored literal prefixes and the name
//! pattern are checked loosely: non-empty), `maxLength`, `minProperties`.

use serde_json::Value;

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.strip_prefix('#').expect("local $ref");
            let target = doc
                .pointer(ptr)
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
            resolve(doc, target)
        }
        None => schema,
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    }
}

/// Checks `value` against `schema` (which may be a `$ref`) inside `doc`.
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let s = resolve(doc, schema);
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one
            .iter()
            .filter(|sub| validate(doc, sub, value, at).is_ok())
            .count();
        if n != 1 {
            return Err(format!(
                "{at}: matches {n} of oneOf, expected exactly 1: {value}"
            ));
        }
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, value),
            Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), value)),
            _ => panic!("bad type in schema"),
        };
        if !ok {
            return Err(format!("{at}: expected type {t}, got {value}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            return Err(format!("{at}: {value} not in enum {e:?}"));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if n < min {
                return Err(format!("{at}: {n} < minimum {min}"));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if n > max {
                return Err(format!("{at}: {n} > maximum {max}"));
            }
        }
    }
    if let Some(st) = value.as_str() {
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if st.chars().count() as u64 > max {
                return Err(format!("{at}: longer than {max}"));
            }
        }
        if s.get("pattern").is_some() && st.is_empty() {
            return Err(format!("{at}: empty string against a pattern"));
        }
    }
    if let Some(obj) = value.as_object() {
        if s.get("type").is_some_and(|t| t == "object") || s.get("properties").is_some() {
            let props = s.get("properties").and_then(Value::as_object);
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap();
                if !obj.contains_key(r) {
                    return Err(format!("{at}: missing required property {r}"));
                }
            }
            if let Some(min) = s.get("minProperties").and_then(Value::as_u64) {
                if (obj.len() as u64) < min {
                    return Err(format!("{at}: fewer than {min} properties"));
                }
            }
            for (k, v) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => validate(doc, sub, v, &format!("{at}.{k}"))?,
                    None => {
                        if s.get("additionalProperties") == Some(&Value::Bool(false)) {
                            return Err(format!("{at}: property {k} not allowed"));
                        }
                    }
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}
