//! DRBD 9 status input: the JSON of `drbdsetup status --json` and the plain
//! text of `drbdadm status`, read into one model ([`Resource`]).
//!
//! The format is detected from the first non-blank character (after an
//! optional byte order mark): `[` or `{` is JSON, anything else is text.
//!
//! ## JSON
//!
//! An array of resources (a single resource object is accepted too). Fields
//! read (others are ignored): `name` (required string), `role`, `devices[]`
//! (`volume`, `disk-state`), `connections[]` (`name`, `connection-state`,
//! `peer-role`, `peer_devices[]` or `peer-devices[]` with `volume`,
//! `replication-state`, `peer-disk-state`, `percent-in-sync` (number or
//! numeric string), `done`). A field of the wrong type is an error naming it.
//!
//! ## Text
//!
//! ```text
//! r0 role:Primary
//!   disk:UpToDate
//!   peer role:Secondary
//!     replication:Established peer-disk:UpToDate
//! ```
//!
//! An unindented line starts a resource (`name role:Role key:value...`; the
//! role is required, which also refuses error messages and stray text). An indented
//! line whose first word has no `:` starts a connection (`peer-name
//! key:value...`; `connection:` is printed only when not `Connected`, so its
//! absence means `Connected`). Other indented lines are a device of the
//! resource (`[volume:N] disk:State`), or a peer device of the current
//! connection when indented deeper than it (`[volume:N] replication:State
//! peer-disk:State [done:P]`). Blank lines are skipped.
//!
//! ## Split-brain markers
//!
//! DRBD reports a split brain in its kernel log, not in a state field. Some
//! tooling adds it to the status; so any string value (JSON, not resource or
//! peer names) or word (text) containing "split-brain", "split_brain" or
//! "splitbrain" (any case), or a JSON key so named with the value `true`,
//! marks the resource as split.

use crate::json::{self, Value};

/// Largest status accepted, in bytes (1 MiB), in either format.
pub const MAX_STATUS_BYTES: usize = json::MAX_INPUT_BYTES;

/// One local volume.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Device {
    /// Volume number.
    pub volume: i64,
    /// `disk-state`, e.g. `UpToDate`; empty when not reported.
    pub disk_state: String,
}

/// One volume as seen through a connection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PeerDevice {
    /// Volume number.
    pub volume: i64,
    /// `replication-state`, e.g. `Established`; empty when not reported.
    pub replication_state: String,
    /// `peer-disk-state`, e.g. `UpToDate`; empty when not reported.
    pub peer_disk_state: String,
    /// `percent-in-sync` (or the text form's `done:`), if reported.
    pub percent_in_sync: Option<f64>,
}

/// One connection to a peer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Connection {
    /// The peer's name.
    pub name: String,
    /// `connection-state`, e.g. `Connected`.
    pub connection_state: String,
    /// `peer-role`, e.g. `Secondary`; empty when not reported.
    pub peer_role: String,
    /// Per-volume replication.
    pub peer_devices: Vec<PeerDevice>,
}

/// One DRBD resource.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    /// Resource name.
    pub name: String,
    /// Local role, e.g. `Primary`; empty when not reported.
    pub role: String,
    /// Local volumes.
    pub devices: Vec<Device>,
    /// Connections to peers, in input order.
    pub connections: Vec<Connection>,
    /// A split-brain marker was found (see the module documentation).
    pub split_brain_marker: bool,
}

/// True when `s` mentions a split brain.
fn mentions_split_brain(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.contains("split-brain") || l.contains("split_brain") || l.contains("splitbrain")
}

/// Parse a status in either format into its resources (at least one).
pub fn parse(raw: &str) -> Result<Vec<Resource>, String> {
    if raw.len() > MAX_STATUS_BYTES {
        return Err(format!(
            "status is {} bytes, more than the {MAX_STATUS_BYTES} accepted",
            raw.len()
        ));
    }
    let body = raw.strip_prefix('\u{feff}').unwrap_or(raw);
    let resources = match body.trim_start().chars().next() {
        None => return Err("status is empty".into()),
        Some('[' | '{') => parse_json(raw)?,
        Some(_) => parse_text(body)?,
    };
    if resources.is_empty() {
        return Err("status lists no DRBD resource".into());
    }
    Ok(resources)
}

// ---------------------------------------------------------------- JSON

/// Read a JSON status.
pub fn parse_json(raw: &str) -> Result<Vec<Resource>, String> {
    let doc = json::parse(raw).map_err(|e| format!("invalid JSON: {e}"))?;
    let items: Vec<&Value> = match &doc {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![&doc],
        other => {
            return Err(format!(
                "JSON status must be an array of resources, found {}",
                other.type_name()
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, r)| resource_from_json(r, &format!("resources[{i}]")))
        .collect()
}

/// A required or optional string member.
fn str_field(obj: &Value, key: &str, at: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(format!(
            "{at}.{key} must be a string, found {}",
            v.type_name()
        )),
    }
}

/// An optional integer member (volume numbers).
fn int_field(obj: &Value, key: &str, at: &str) -> Result<Option<i64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.fract() == 0.0 && n.abs() < 1e15 => Ok(Some(*n as i64)),
        Some(v) => Err(format!(
            "{at}.{key} must be an integer, found {}",
            v.type_name()
        )),
    }
}

/// An optional percentage member: a number or a numeric string.
fn pct_field(obj: &Value, key: &str, at: &str) -> Result<Option<f64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(*n)),
        Some(Value::String(s)) => s
            .trim()
            .trim_end_matches('%')
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| format!("{at}.{key} must be a number, found {s:?}")),
        Some(v) => Err(format!(
            "{at}.{key} must be a number, found {}",
            v.type_name()
        )),
    }
}

/// An optional array member of objects.
fn arr_field<'v>(obj: &'v Value, keys: &[&str], at: &str) -> Result<&'v [Value], String> {
    for key in keys {
        match obj.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => {
                if let Some((i, v)) = a
                    .iter()
                    .enumerate()
                    .find(|(_, v)| !matches!(v, Value::Object(_)))
                {
                    return Err(format!(
                        "{at}.{key}[{i}] must be an object, found {}",
                        v.type_name()
                    ));
                }
                return Ok(a);
            }
            Some(v) => {
                return Err(format!(
                    "{at}.{key} must be an array, found {}",
                    v.type_name()
                ))
            }
        }
    }
    Ok(&[])
}

/// True when a split-brain marker occurs in `v` (names excluded).
fn json_marker(v: &Value) -> bool {
    match v {
        Value::String(s) => mentions_split_brain(s),
        Value::Array(a) => a.iter().any(json_marker),
        Value::Object(m) => m.iter().any(|(k, v)| {
            (mentions_split_brain(k) && *v == Value::Bool(true)) || (k != "name" && json_marker(v))
        }),
        _ => false,
    }
}

fn resource_from_json(r: &Value, at: &str) -> Result<Resource, String> {
    if !matches!(r, Value::Object(_)) {
        return Err(format!("{at} must be an object, found {}", r.type_name()));
    }
    let name = str_field(r, "name", at)?.ok_or_else(|| format!("{at} has no \"name\""))?;
    let at = format!("resource {name:?}");
    let role = str_field(r, "role", &at)?.unwrap_or_default();
    let mut devices = Vec::new();
    for (i, d) in arr_field(r, &["devices"], &at)?.iter().enumerate() {
        let dat = format!("{at}.devices[{i}]");
        devices.push(Device {
            volume: int_field(d, "volume", &dat)?.unwrap_or(i as i64),
            disk_state: str_field(d, "disk-state", &dat)?.unwrap_or_default(),
        });
    }
    let mut connections = Vec::new();
    for (i, c) in arr_field(r, &["connections"], &at)?.iter().enumerate() {
        let cat = format!("{at}.connections[{i}]");
        let mut peer_devices = Vec::new();
        for (j, p) in arr_field(c, &["peer_devices", "peer-devices"], &cat)?
            .iter()
            .enumerate()
        {
            let pat = format!("{cat}.peer_devices[{j}]");
            let pct = match pct_field(p, "percent-in-sync", &pat)? {
                Some(v) => Some(v),
                None => pct_field(p, "done", &pat)?,
            };
            peer_devices.push(PeerDevice {
                volume: int_field(p, "volume", &pat)?.unwrap_or(j as i64),
                replication_state: str_field(p, "replication-state", &pat)?.unwrap_or_default(),
                peer_disk_state: str_field(p, "peer-disk-state", &pat)?.unwrap_or_default(),
                percent_in_sync: pct,
            });
        }
        connections.push(Connection {
            name: str_field(c, "name", &cat)?.unwrap_or_default(),
            connection_state: str_field(c, "connection-state", &cat)?.unwrap_or_default(),
            peer_role: str_field(c, "peer-role", &cat)?.unwrap_or_default(),
            peer_devices,
        });
    }
    Ok(Resource {
        name,
        role,
        devices,
        connections,
        split_brain_marker: json_marker(r),
    })
}

// ---------------------------------------------------------------- text

/// `key:value` pairs of a line's words, checking each has a colon.
fn pairs<'a>(words: &[&'a str], line_no: usize) -> Result<Vec<(&'a str, &'a str)>, String> {
    words
        .iter()
        .map(|w| {
            w.split_once(':')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("line {line_no}: expected key:value, found {w:?}"))
        })
        .collect()
}

/// A `volume:` value.
fn volume(v: &str, line_no: usize) -> Result<i64, String> {
    v.parse::<i64>()
        .map_err(|_| format!("line {line_no}: volume must be a number, found {v:?}"))
}

/// Read a `drbdadm status` text.
pub fn parse_text(raw: &str) -> Result<Vec<Resource>, String> {
    let mut out: Vec<Resource> = Vec::new();
    // Indentation of the current connection line, if any.
    let mut conn_indent: Option<usize> = None;
    for (i, line) in raw.lines().enumerate() {
        let line_no = i + 1;
        if let Some(c) = line
            .chars()
            .find(|c| c.is_control() && *c != '\t' && *c != '\r')
        {
            return Err(format!(
                "line {line_no}: control character U+{:04X}",
                c as u32
            ));
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let marker = words.iter().any(|w| mentions_split_brain(w));
        if indent == 0 {
            if words[0].contains(':') {
                return Err(format!(
                    "line {line_no}: expected a resource name, found {:?}",
                    words[0]
                ));
            }
            let mut r = Resource {
                name: words[0].to_string(),
                split_brain_marker: marker,
                ..Default::default()
            };
            let mut has_role = false;
            for (k, v) in pairs(&words[1..], line_no)? {
                if k == "role" {
                    r.role = v.to_string();
                    has_role = true;
                }
            }
            if !has_role {
                return Err(format!(
                    "line {line_no}: resource line {trimmed:?} has no role:"
                ));
            }
            out.push(r);
            conn_indent = None;
            continue;
        }
        let Some(r) = out.last_mut() else {
            return Err(format!("line {line_no}: indented line before any resource"));
        };
        r.split_brain_marker |= marker;
        if !words[0].contains(':') {
            let mut c = Connection {
                name: words[0].to_string(),
                connection_state: "Connected".into(),
                ..Default::default()
            };
            for (k, v) in pairs(&words[1..], line_no)? {
                match k {
                    "connection" => c.connection_state = v.to_string(),
                    "role" => c.peer_role = v.to_string(),
                    _ => {}
                }
            }
            r.connections.push(c);
            conn_indent = Some(indent);
            continue;
        }
        let kv = pairs(&words, line_no)?;
        match (conn_indent, r.connections.last_mut()) {
            (Some(ci), Some(c)) if indent > ci => {
                let mut p = PeerDevice {
                    volume: c.peer_devices.len() as i64,
                    ..Default::default()
                };
                for (k, v) in kv {
                    match k {
                        "volume" => p.volume = volume(v, line_no)?,
                        "replication" => p.replication_state = v.to_string(),
                        "peer-disk" => p.peer_disk_state = v.to_string(),
                        "done" => {
                            p.percent_in_sync = Some(
                                v.trim_end_matches('%')
                                    .parse::<f64>()
                                    .ok()
                                    .filter(|n| n.is_finite())
                                    .ok_or_else(|| {
                                        format!(
                                            "line {line_no}: done must be a number, found {v:?}"
                                        )
                                    })?,
                            )
                        }
                        _ => {}
                    }
                }
                c.peer_devices.push(p);
            }
            _ => {
                conn_indent = None;
                let mut d = Device {
                    volume: r.devices.len() as i64,
                    ..Default::default()
                };
                for (k, v) in kv {
                    match k {
                        "volume" => d.volume = volume(v, line_no)?,
                        "disk" => d.disk_state = v.to_string(),
                        _ => {}
                    }
                }
                r.devices.push(d);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn reads_real_drbdsetup_json() {
        let r = parse(HEALTHY_JSON).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "r0");
        assert_eq!(r[0].role, "Primary");
        assert_eq!(
            r[0].devices,
            vec![Device {
                volume: 0,
                disk_state: "UpToDate".into()
            }]
        );
        let c = &r[0].connections[0];
        assert_eq!(
            (
                c.name.as_str(),
                c.connection_state.as_str(),
                c.peer_role.as_str()
            ),
            ("nas-b", "Connected", "Secondary")
        );
        assert_eq!(
            c.peer_devices,
            vec![PeerDevice {
                volume: 0,
                replication_state: "Established".into(),
                peer_disk_state: "UpToDate".into(),
                percent_in_sync: Some(100.0),
            }]
        );
        assert!(!r[0].split_brain_marker);
        assert_eq!(r[1].name, "r1");
    }

    #[test]
    fn reads_drbdadm_text() {
        let r = parse(HEALTHY_TEXT).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "r0");
        assert_eq!(r[0].role, "Primary");
        assert_eq!(
            r[0].devices,
            vec![Device {
                volume: 0,
                disk_state: "UpToDate".into()
            }]
        );
        assert_eq!(r[0].connections[0].connection_state, "Connected");
        assert_eq!(r[0].connections[0].peer_role, "Secondary");
        assert_eq!(
            r[0].connections[0].peer_devices[0].replication_state,
            "Established"
        );
        assert_eq!(
            r[0].connections[0].peer_devices[0].peer_disk_state,
            "UpToDate"
        );
    }

    #[test]
    fn text_with_volumes_sync_progress_and_several_resources() {
        let t = "r0 role:Secondary suspended:no\n  volume:0 disk:Inconsistent\n  volume:1 disk:UpToDate\n  nas-a role:Primary congested:no\n    volume:0 replication:SyncTarget peer-disk:UpToDate done:45.20\n    volume:1 replication:Established peer-disk:UpToDate\n\nr1 role:Secondary\n  disk:Outdated\n  nas-a connection:StandAlone\n";
        let r = parse(t).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].devices.len(), 2);
        assert_eq!(r[0].devices[1].volume, 1);
        let pd = &r[0].connections[0].peer_devices;
        assert_eq!(pd[0].percent_in_sync, Some(45.2));
        assert_eq!(pd[1].volume, 1);
        assert_eq!(r[1].connections[0].connection_state, "StandAlone");
        assert_eq!(r[1].devices[0].disk_state, "Outdated");
    }

    #[test]
    fn split_brain_markers_are_found_but_not_in_names() {
        let j = r#"[{"name":"split-brain-test","role":"Primary","connections":[{"name":"split_brain_peer","connection-state":"StandAlone"}]}]"#;
        assert!(!parse(j).unwrap()[0].split_brain_marker);
        let j = r#"[{"name":"r0","role":"Primary","connections":[{"connection-state":"StandAlone","last-event":"Split-Brain detected"}]}]"#;
        assert!(parse(j).unwrap()[0].split_brain_marker);
        let j = r#"[{"name":"r0","split-brain":true}]"#;
        assert!(parse(j).unwrap()[0].split_brain_marker);
        let j = r#"[{"name":"r0","split-brain":false}]"#;
        assert!(!parse(j).unwrap()[0].split_brain_marker);
        let t = "r0 role:Primary\n  disk:UpToDate\n  peer connection:StandAlone split-brain:yes\n";
        assert!(parse(t).unwrap()[0].split_brain_marker);
    }

    #[test]
    fn json_accepts_single_object_and_string_percentages() {
        let j = r#"{"name":"r0","connections":[{"peer-devices":[{"percent-in-sync":"87.5"}]}]}"#;
        let r = parse(j).unwrap();
        assert_eq!(
            r[0].connections[0].peer_devices[0].percent_in_sync,
            Some(87.5)
        );
    }

    #[test]
    fn json_type_errors_name_the_field() {
        let cases = [
            (r#"[{"role":"Primary"}]"#, "resources[0] has no \"name\""),
            (r#"[{"name":7}]"#, "resources[0].name must be a string, found number"),
            (r#"[{"name":"r0","role":1}]"#, "resource \"r0\".role must be a string, found number"),
            (r#"[{"name":"r0","devices":{}}]"#, "resource \"r0\".devices must be an array, found object"),
            (r#"[{"name":"r0","devices":[1]}]"#, "resource \"r0\".devices[0] must be an object, found number"),
            (r#"[{"name":"r0","devices":[{"volume":0.5}]}]"#, "devices[0].volume must be an integer"),
            (
                r#"[{"name":"r0","connections":[{"peer_devices":[{"percent-in-sync":"lots"}]}]}]"#,
                "resource \"r0\".connections[0].peer_devices[0].percent-in-sync must be a number, found \"lots\"",
            ),
            (r#"["r0"]"#, "resources[0] must be an object, found string"),
            (r#"{"name":"r0","connections":[{"connection-state":true}]}"#, "connections[0].connection-state must be a string, found boolean"),
        ];
        for (input, msg) in cases {
            let e = parse(input).unwrap_err();
            assert!(e.contains(msg), "{input}: {e}");
        }
    }

    #[test]
    fn syntax_errors_carry_position() {
        let e = parse("[{\"name\": \"r0\",}]").unwrap_err();
        assert!(e.starts_with("invalid JSON: expected a string key"), "{e}");
        assert!(e.contains("line 1, column 16"), "{e}");
    }

    #[test]
    fn text_errors_name_the_line() {
        let cases = [
            (
                "  disk:UpToDate\n",
                "line 1: indented line before any resource",
            ),
            ("role:Primary\n", "line 1: expected a resource name"),
            (
                "r0 role:Primary Primary\n",
                "line 1: expected key:value, found \"Primary\"",
            ),
            (
                "r0 role:Primary\n  volume:x disk:UpToDate\n",
                "line 2: volume must be a number",
            ),
            (
                "r0 role:Primary\n  peer role:Secondary\n    replication:SyncSource done:fast\n",
                "line 3: done must be a number",
            ),
            (
                "r0 role:Primary\n  disk:Up\u{1b}ToDate\n",
                "line 2: control character U+001B",
            ),
        ];
        for (input, msg) in cases {
            let e = parse(input).unwrap_err();
            assert!(e.contains(msg), "{input:?}: {e}");
        }
    }

    #[test]
    fn empty_and_resource_less_inputs_are_refused() {
        assert_eq!(parse("").unwrap_err(), "status is empty");
        assert_eq!(parse(" \n\t").unwrap_err(), "status is empty");
        assert_eq!(parse("[]").unwrap_err(), "status lists no DRBD resource");
        assert_eq!(
            parse("42").unwrap_err(),
            "line 1: resource line \"42\" has no role:"
        );
        assert!(parse("# No currently configured DRBD found.")
            .unwrap_err()
            .starts_with("line 1: "));
        assert!(parse("\"x\"").unwrap_err().contains("has no role:"));
        assert!(parse("[1]").unwrap_err().contains("must be an object"));
    }

    #[test]
    fn oversized_status_is_refused() {
        let big = "r0 role:Primary\n".repeat(MAX_STATUS_BYTES / 16 + 1);
        assert!(parse(&big)
            .unwrap_err()
            .contains("more than the 1048576 accepted"));
    }
}
