//! Test support, a dev-dependency only (never shipped): a small structural
//! JSON-schema checker for the subset the generated `openapi.json` uses, so
//! tests (the API's, the CLI's and the daemon's) can check real answers
//! against it, and [`view`], which also reads them strictly into the views.
//!
//! Supported: `$ref` (local), `type` (string or list), `properties`,
//! `required`, `additionalProperties: false`, `items`, `enum`, `minimum`,
//! `maximum`, `oneOf`, `anyOf`, `const`, `minLength`, `maxLength`, `minItems`, `maxItems`,
//! `minProperties`, `format: date-time` (RFC 3339). `pattern` is checked
//! loosely: the string must not be empty.

use serde_json::Value;

fn resolve<'a>(doc: &'a Value, schema: &'a Value, depth: usize) -> Result<&'a Value, String> {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            if depth > 32 {
                return Err(format!("$ref {r}: too deep"));
            }
            let ptr = r
                .strip_prefix('#')
                .ok_or_else(|| format!("$ref {r}: only local references are supported"))?;
            let target = doc
                .pointer(ptr)
                .ok_or_else(|| format!("dangling $ref {r}"))?;
            resolve(doc, target, depth + 1)
        }
        None => Ok(schema),
    }
}

fn type_ok(t: &str, v: &Value) -> Result<bool, String> {
    Ok(match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => return Err(format!("unknown type {other} in schema")),
    })
}

fn digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// Whether `s` is an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        digits(part).then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let shape = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't')
        && b[13] == b':'
        && b[16] == b':';
    if !shape {
        return false;
    }
    let (Some(_y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return false;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &rest[1 + n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            digits(&[*h1, *h2, *m1, *m2])
                && (*h1 - b'0') * 10 + (*h2 - b'0') <= 23
                && (*m1 - b'0') * 10 + (*m2 - b'0') <= 59
        }
        _ => false,
    }
}

/// Checks `value` against `schema` (which may be a `$ref`) inside `doc`
/// (the whole OpenAPI document). `what` names the value in the error, e.g.
/// `getVm`; the error gives the path inside the value and the reason.
pub fn validate(doc: &Value, schema: &Value, value: &Value, what: &str) -> Result<(), String> {
    let s = resolve(doc, schema, 0)?;
    let at = what;
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|sub| validate(doc, sub, value, at).is_ok()) {
            return Err(format!("{at}: matches none of anyOf: {value}"));
        }
    }
    if let Some(c) = s.get("const") {
        if c != value {
            return Err(format!("{at}: {value} is not {c}"));
        }
    }
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
            Value::String(t) => type_ok(t, value)?,
            Value::Array(ts) => {
                let mut any = false;
                for t in ts {
                    any |= type_ok(t.as_str().ok_or("bad type list in schema")?, value)?;
                }
                any
            }
            _ => return Err(format!("{at}: bad type in schema")),
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
        let len = st.chars().count() as u64;
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                return Err(format!("{at}: longer than {max}"));
            }
        }
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if len < min {
                return Err(format!("{at}: shorter than {min}"));
            }
        }
        if s.get("pattern").is_some() && st.is_empty() {
            return Err(format!("{at}: empty string against a pattern"));
        }
        if s.get("format").and_then(Value::as_str) == Some("date-time") && !is_rfc3339(st) {
            return Err(format!("{at}: {st:?} is not an RFC 3339 date-time"));
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
                let r = r.as_str().ok_or("bad required list in schema")?;
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
    if let Some(arr) = value.as_array() {
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
            if arr.len() as u64 > max {
                return Err(format!("{at}: more than {max} items"));
            }
        }
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if (arr.len() as u64) < min {
                return Err(format!("{at}: fewer than {min} items"));
            }
        }
        if let Some(items) = s.get("items") {
            for (i, v) in arr.iter().enumerate() {
                validate(doc, items, v, &format!("{at}[{i}]"))?;
            }
        }
    }
    Ok(())
}

/// The parsed, generated `openapi.json` (`nasvisor_api_types::openapi`).
pub fn openapi() -> Value {
    serde_json::from_str(nasvisor_api_types::openapi::OPENAPI_JSON)
        .expect("openapi.json is valid JSON (tested)")
}

/// Checks `value` against component schema `name` of `openapi.json` and
/// reads it back, strictly ([`nasvisor_api_types::view::strict`]), as a `T`.
pub fn view<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: &Value,
    name: &str,
) -> Result<T, String> {
    let doc = openapi();
    let s = serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
    validate(&doc, &s, value, name)?;
    nasvisor_api_types::view::strict(value)
}

/// The JSON schema of the `status` answer of `method path_template` in
/// `doc` (falling back to `default`), if that answer has a JSON body.
pub fn response_schema<'a>(
    doc: &'a Value,
    method: &str,
    path_template: &str,
    status: u16,
) -> Option<&'a Value> {
    let responses = doc
        .get("paths")?
        .get(path_template)?
        .get(method.to_lowercase())?
        .get("responses")?;
    let r = responses
        .get(status.to_string())
        .or_else(|| responses.get("default"))?;
    r.pointer("/content/application~1json/schema")
}

/// Checks a real answer of route `method path_template` (e.g. `GET`,
/// `/api/v1/vms/{id}`) with `status` against this crate's `openapi.json`.
/// An answer the document gives no JSON body must be `Value::Null`.
pub fn check_response(
    method: &str,
    path_template: &str,
    status: u16,
    value: &Value,
) -> Result<(), String> {
    let doc = openapi();
    if doc
        .get("paths")
        .and_then(|p| p.get(path_template))
        .and_then(|p| p.get(method.to_lowercase()))
        .is_none()
    {
        return Err(format!("{method} {path_template}: not in openapi.json"));
    }
    match response_schema(&doc, method, path_template, status) {
        Some(s) => validate(
            &doc,
            s,
            value,
            &format!("{method} {path_template} {status}"),
        ),
        None if value.is_null() => Ok(()),
        None => Err(format!(
            "{method} {path_template} {status}: documented without a JSON body, got {value}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        for ok in [
            "2026-01-01T00:00:00Z",
            "2026-12-31T23:59:59.123456Z",
            "2026-01-01T00:00:00+02:00",
            "2026-01-01t00:00:00-05:30",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01 00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0200",
            "1767225600",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
