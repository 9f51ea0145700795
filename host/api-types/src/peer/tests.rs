use super::*;
use serde_json::json;

/// A stand-in for the core's VM record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Vm {
    id: String,
    vcpus: u32,
}

type Any = PeerCall<Vm>;

fn every_call() -> Vec<Any> {
    vec![
        Heartbeat::default().into_call(),
        ForwardAction {
            action: Action::GetVm { id: "v1".into() },
            after: 9,
        }
        .into_call(),
        Read {
            action: Action::ListHosts,
            after: 17,
        }
        .into_call(),
        Console {
            id: "v1".into(),
            tail: 4096,
        }
        .into_call(),
        MigratePrepare {
            vm: Vm {
                id: "v1".into(),
                vcpus: 2,
            },
            copy: vec![CopyDisk {
                node: "disk0".into(),
                pool: Some("default".into()),
                volume: Some("v1-0".into()),
                size_bytes: 1 << 30,
            }],
            live: true,
        }
        .into_call(),
        Call::<Vm>::into_call(MigrateFinish { id: "v1".into() }),
        Call::<Vm>::into_call(MigrateAbort { id: "v1".into() }),
        Call::<Vm>::into_call(ImageExport {
            name: "debian".into(),
        }),
        Call::<Vm>::into_call(ImageExportEnd {
            id: "debian-4000".into(),
        }),
        Call::<Vm>::into_call(JobProgress {
            ids: vec!["a1".into(), "b2".into()],
        }),
    ]
}

#[test]
fn every_call_survives_the_round_trip_through_the_envelope() {
    let calls = every_call();
    let names: std::collections::HashSet<&str> = calls.iter().map(PeerCall::name).collect();
    assert_eq!(names.len(), 10, "every call has its own name");
    for call in calls {
        let v = serde_json::to_value(PeerEnvelope {
            version: PEER_PROTOCOL,
            call: call.clone(),
        })
        .unwrap();
        assert_eq!(v["version"], PEER_PROTOCOL);
        assert_eq!(v["call"]["call"], call.name());
        let back: Any = decode_request(PeerWindow::BUILD, v).unwrap();
        assert_eq!(back, call);
    }
}

#[test]
fn the_envelope_helper_writes_the_version_and_the_call_name() {
    let v = envelope::<Vm, _>(
        PEER_PROTOCOL,
        Console {
            id: "v1".into(),
            tail: 10,
        },
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"version": PEER_PROTOCOL, "call": {"call": "console", "body": {"id": "v1", "tail": 10}}})
    );
}

#[test]
fn an_unknown_version_is_refused_before_the_call_is_read() {
    // The call is garbage: a refusal of the version proves it was not read.
    for theirs in [PEER_PROTOCOL + 1, PEER_PROTOCOL_OLDEST - 1, 0, 99] {
        let v = json!({"version": theirs, "call": {"call": "no-such-call", "body": 42}});
        let err = decode_request::<Vm>(PeerWindow::BUILD, v).unwrap_err();
        assert_eq!(
            err,
            PeerRefusal::UnsupportedVersion {
                ours: PEER_PROTOCOL,
                oldest: PEER_PROTOCOL_OLDEST,
                theirs
            }
        );
    }
}

#[test]
fn a_request_without_a_version_is_protocol_1_and_refused() {
    // What a host of the untyped protocol sent: `console` with its fields.
    let v = json!({"id": "v1", "tail": 10});
    let err = decode_request::<Vm>(PeerWindow::BUILD, v).unwrap_err();
    assert_eq!(
        err,
        PeerRefusal::UnsupportedVersion {
            ours: PEER_PROTOCOL,
            oldest: PEER_PROTOCOL_OLDEST,
            theirs: UNVERSIONED
        }
    );
    let err = decode_request::<Vm>(PeerWindow::BUILD, json!({"version": "2"})).unwrap_err();
    assert!(
        matches!(&err, PeerRefusal::Malformed { reason, .. } if reason.contains("version")),
        "{err:?}"
    );
}

#[test]
fn a_missing_field_is_an_error_naming_the_call_and_the_field() {
    let v = json!({"version": PEER_PROTOCOL, "call": {"call": "console", "body": {"tail": 10}}});
    let err = decode_request::<Vm>(PeerWindow::BUILD, v).unwrap_err();
    match err {
        PeerRefusal::Malformed { call, reason } => {
            assert_eq!(call, "console");
            assert!(reason.contains("missing field `id`"), "{reason}");
        }
        other => panic!("not malformed: {other:?}"),
    }
    let v = json!({"version": PEER_PROTOCOL, "call": {"call": "migrate-prepare",
        "body": {"vm": {"id": "v1"}, "copy": [], "live": true}}});
    let err = decode_request::<Vm>(PeerWindow::BUILD, v).unwrap_err();
    assert!(
        matches!(&err, PeerRefusal::Malformed { call, reason }
            if call == "migrate-prepare" && reason.contains("missing field `vcpus`")),
        "{err:?}"
    );
    let v = json!({"version": PEER_PROTOCOL, "call": {"call": "no-such-call", "body": {}}});
    let err = decode_request::<Vm>(PeerWindow::BUILD, v).unwrap_err();
    assert!(
        matches!(&err, PeerRefusal::Malformed { call, reason }
            if call == "no-such-call" && reason.contains("unknown variant")),
        "{err:?}"
    );
}

#[test]
fn an_answer_of_the_wrong_shape_names_the_call_and_the_field() {
    let err = decode_reply::<Vm, Console>(json!({"bytes": "AA=="})).unwrap_err();
    assert_eq!(err.call, "console");
    assert!(
        err.reason.contains("missing field `data`"),
        "{}",
        err.reason
    );
    let err = decode_reply::<Vm, ImageExport>(
        json!({"id": "x", "host": "h", "port": "p", "format": "qcow2"}),
    )
    .unwrap_err();
    assert_eq!(err.call, "image-export");
    assert!(err.reason.contains("invalid type"), "{}", err.reason);
    let ok = decode_reply::<Vm, MigrateFinish>(Value::Null);
    assert_eq!(ok, Ok(()));
    let hb = HeartbeatReply {
        host: "nas1".into(),
        version: "0.1.0".into(),
        protocol: PEER_PROTOCOL,
        healthy: false,
        problems: vec!["pool default is read-only".into()],
        running_vms: 1,
        storage_gib: 10,
        free_storage_gib: 5,
        seq: 7,
    };
    let v = encode_reply::<Vm, Heartbeat>(&hb).unwrap();
    assert_eq!(decode_reply::<Vm, Heartbeat>(v), Ok(hb.clone()));
    // An answer without `seq` (a member before it was added) reads as 0.
    let mut old = encode_reply::<Vm, Heartbeat>(&hb).unwrap();
    old.as_object_mut().expect("an object").remove("seq");
    assert_eq!(decode_reply::<Vm, Heartbeat>(old).map(|r| r.seq), Ok(0));
}

#[test]
fn the_window_serves_its_versions_and_stamps_the_highest_both_sides_serve() {
    let w = PeerWindow {
        oldest: 2,
        current: 3,
    };
    assert!(!w.serves(1) && w.serves(2) && w.serves(3) && !w.serves(4));
    assert_eq!(w.stamp_for(None), 3);
    assert_eq!(
        w.stamp_for(Some(2)),
        2,
        "an older member is written its version"
    );
    assert_eq!(w.stamp_for(Some(3)), 3);
    assert_eq!(w.stamp_for(Some(4)), 3, "a newer member reads ours");
    assert_eq!(
        w.stamp_for(Some(1)),
        3,
        "a member too old is refused by its own check"
    );
    assert_eq!(stamp_for(None), PEER_PROTOCOL);
    assert!(PeerWindow::BUILD.serves(PEER_PROTOCOL));
}

#[test]
fn a_forwarded_answer_is_tagged_on_the_wire_and_plain_for_the_api() {
    use crate::view::{Answer, IntoAnswer, VswitchView};
    let sw = VswitchView {
        name: "lan".into(),
        uplink: Some("eth0".into()),
        vlan: Some(10),
    };
    let reply = ActionReply {
        result: sw.clone().into_answer(),
        revision: 42,
    };
    let wire = encode_reply::<Vm, ForwardAction>(&reply).unwrap();
    assert_eq!(
        wire["result"],
        json!({"view": "vswitch", "body": {"name": "lan", "uplink": "eth0", "vlan": 10}})
    );
    assert_eq!(decode_reply::<Vm, ForwardAction>(wire), Ok(reply.clone()));
    // The API's body is the view itself; no content is null.
    assert_eq!(
        reply.result.to_json().unwrap(),
        serde_json::to_value(&sw).unwrap()
    );
    assert_eq!(().into_answer().to_json().unwrap(), Value::Null);
    assert_eq!(None::<VswitchView>.into_answer(), Answer::Empty);
    // A view renamed on one side does not decode as an empty one.
    let renamed =
        json!({"view": "vswitch", "body": {"switch_name": "lan", "uplink": null, "vlan": null}});
    let err = decode_reply::<Vm, Read>(renamed).unwrap_err();
    assert_eq!(err.call, "read");
    assert!(
        err.reason.contains("missing field `name`"),
        "{}",
        err.reason
    );
    let untagged = json!({"name": "lan", "uplink": null, "vlan": null});
    assert!(decode_reply::<Vm, Read>(untagged).is_err());
}
