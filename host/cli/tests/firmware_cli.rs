//! End-to-end tests of `nasvisor firmware build|sign|verify|inspect`: the
//! real binary, keys made by `nasvisor plugin keygen`, real files, and what
//! a user sees (exit status, the answer on stdout, one-line errors).

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{assert_one_line_error, assert_success, p, show, stdout};

/// `nasvisor <args>` with a clean environment.
fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nasvisor"));
    c.args(args)
        .env_remove("NASVISOR_OUTPUT")
        .env_remove("NASVISOR_LOG")
        .env_remove("RUST_LOG")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("spawn nasvisor")
}

/// A vendor's workspace: a key made by `plugin keygen`, a trusted-key
/// directory with its public key, and a payload.
struct Vendor {
    dir: tempfile::TempDir,
}

impl Vendor {
    fn new() -> Vendor {
        let v = Vendor {
            dir: tempfile::tempdir().unwrap(),
        };
        assert_success(&run(&["plugin", "keygen", "--out", p(&v.path("acme"))]));
        std::fs::create_dir(v.path("trusted")).unwrap();
        std::fs::copy(v.path("acme.pub"), v.path("trusted/acme.pub")).unwrap();
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(v.path("rootfs.img"), payload).unwrap();
        v
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        p(&self.path(name)).to_string()
    }

    /// The arguments of `firmware build` of rootfs.img for boards acme-nas4
    /// and acme-nas8, then `extra` (which names the class).
    fn build_args(&self, product: &str, version: &str, out: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "firmware",
            "build",
            "--payload",
            &self.s("rootfs.img"),
            "--product",
            product,
            "--compatible",
            "acme-nas4",
            "--compatible",
            "acme-nas8",
            "--version",
            version,
            "--out",
            &self.s(out),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    /// `firmware build` of acme-nas 2.1.0 (floor 2.0.0), with `extra`
    /// options.
    fn build(&self, out: &str, extra: &[&str]) -> Output {
        let mut args = vec!["--class", "reboot", "--min-version", "2.0.0"];
        args.extend_from_slice(extra);
        run(&strs(&self.build_args("acme-nas", "2.1.0", out, &args)))
    }

    /// A bundle built and signed in one step.
    fn signed(&self, out: &str) -> PathBuf {
        let key = self.s("acme.key");
        assert_success(&self.build(out, &["--key", &key]));
        self.path(out)
    }

    /// `firmware verify` against the trusted directory, as board acme-nas4.
    fn verify(&self, bundle: &Path, extra: &[&str]) -> Output {
        let trusted = self.s("trusted");
        let mut args = vec![
            "firmware",
            "verify",
            p(bundle),
            "--trusted-keys",
            &trusted,
            "--product",
            "acme-nas",
            "--compatible",
            "acme-nas4",
        ];
        args.extend_from_slice(extra);
        run(&args)
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(o)))
}

/// Where the payload starts in a signed bundle: the manifest header, the
/// manifest padded to blocks, the signature's header and block, the
/// payload's header.
fn payload_offset(bundle: &[u8]) -> usize {
    let size = std::str::from_utf8(&bundle[124..135]).unwrap();
    let manifest = usize::from_str_radix(size.trim_matches(|c| c == '\0' || c == ' '), 8).unwrap();
    512 + manifest.div_ceil(512) * 512 + 3 * 512
}

#[test]
fn build_sign_verify_and_inspect_a_bundle() {
    let v = Vendor::new();
    let o = v.build("u.nvfw", &["--expires-in", "30d"]);
    assert_success(&o);
    assert!(
        stdout(&o).starts_with("built acme-nas 2.1.0 (reboot, 5000 bytes of payload"),
        "{}",
        show(&o)
    );
    assert!(stdout(&o).contains("unsigned"), "{}", show(&o));
    let bundle = v.path("u.nvfw");

    let o = v.verify(&bundle, &[]);
    assert_one_line_error(&o, "unsigned bundle");

    let o = run(&["firmware", "sign", p(&bundle), "--key", &v.s("acme.key")]);
    assert_success(&o);
    assert!(stdout(&o).starts_with("signed acme-nas 2.1.0 (reboot) with key "));

    let o = v.verify(&bundle, &["--installed-version", "2.0.5"]);
    assert_success(&o);
    let line = stdout(&o);
    assert!(
        line.starts_with("ok: acme-nas 2.1.0 (reboot) signed by "),
        "{line}"
    );
    assert!(!line.contains("not checked"), "{line}");

    let o = run(&["firmware", "inspect", p(&bundle)]);
    assert_success(&o);
    let text = stdout(&o);
    for needle in [
        "product:         acme-nas",
        "compatible:      acme-nas4, acme-nas8",
        "min-version:     2.0.0",
        "class:           reboot",
        "payload:         rootfs.img",
        "payload size:    5000 bytes",
        "(not verified; use `firmware verify`)",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }

    let o = run(&["-o", "json", "firmware", "inspect", p(&bundle)]);
    assert_success(&o);
    let doc = json(&o);
    assert_eq!(doc["signed"], true);
    let m = &doc["manifest"];
    assert_eq!(m["version"], "2.1.0");
    assert_eq!(m["payload"]["size"], 5000);
    let sha = nasvisor_signing::sha256_hex(&std::fs::read(v.path("rootfs.img")).unwrap());
    assert_eq!(m["payload"]["sha256"], sha.as_str());
    let pubkey = nasvisor_signing::read_public_key(&v.path("acme.pub")).unwrap();
    assert_eq!(
        m["signer"],
        nasvisor_signing::key_id(&pubkey).as_str(),
        "the keygen key is the signer"
    );
}

#[test]
fn verify_as_json_and_extract_the_payload() {
    let v = Vendor::new();
    let bundle = v.signed("s.nvfw");
    let dest = v.path("slot.img");
    let o = v.verify(&bundle, &["-o", "json", "--extract", p(&dest)]);
    assert_success(&o);
    let doc = json(&o);
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["manifest"]["class"], "reboot");
    assert_eq!(doc["extracted"], p(&dest));
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(v.path("rootfs.img")).unwrap()
    );
    let o = v.verify(&bundle, &["-o", "yaml"]);
    assert_success(&o);
    assert!(stdout(&o).contains("verified: true"), "{}", show(&o));
}

#[test]
fn a_tampered_manifest_or_payload_and_a_truncated_bundle_are_refused() {
    let v = Vendor::new();
    let bundle = v.signed("s.nvfw");
    let good = std::fs::read(&bundle).unwrap();

    let mut manifest = good.clone();
    let at = manifest.windows(7).position(|w| w == b"\"2.1.0\"").unwrap();
    manifest[at + 3] = b'9';
    let path = v.path("manifest.nvfw");
    std::fs::write(&path, &manifest).unwrap();
    assert_one_line_error(&v.verify(&path, &[]), "tampered manifest");

    let mut payload = good.clone();
    payload[payload_offset(&good) + 4000] ^= 0x55;
    let path = v.path("payload.nvfw");
    std::fs::write(&path, &payload).unwrap();
    let dest = v.path("out.img");
    assert_one_line_error(
        &v.verify(&path, &["--extract", p(&dest)]),
        "tampered payload: its sha256 is",
    );
    assert!(!dest.exists(), "a refused payload is not extracted");
    let leftovers: Vec<_> = std::fs::read_dir(v.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let path = v.path("short.nvfw");
    std::fs::write(&path, &good[..payload_offset(&good) + 100]).unwrap();
    assert_one_line_error(
        &v.verify(&path, &[]),
        "truncated payload: 100 of its 5000 signed bytes",
    );
    std::fs::write(&path, &good[..300]).unwrap();
    assert_one_line_error(&v.verify(&path, &[]), "truncated bundle");
}

#[test]
fn the_wrong_key_product_board_expiry_or_version_is_refused_with_its_reason() {
    let v = Vendor::new();
    let bundle = v.signed("s.nvfw");

    let stranger = Vendor::new();
    assert_one_line_error(
        &stranger.verify(&bundle, &[]),
        "untrusted signer: the bundle is signed by key",
    );

    let trusted = v.s("trusted");
    let o = run(&[
        "firmware",
        "verify",
        p(&bundle),
        "--trusted-keys",
        &trusted,
        "--product",
        "zeta-nas",
    ]);
    assert_one_line_error(&o, "wrong product");
    assert_one_line_error(
        &run(&[
            "firmware",
            "verify",
            p(&bundle),
            "--trusted-keys",
            &trusted,
            "--compatible",
            "acme-nas2",
        ]),
        "incompatible board: the bundle is for acme-nas4, acme-nas8, not \"acme-nas2\"",
    );
    assert_one_line_error(
        &v.verify(&bundle, &["--at", "2099-01-01T00:00:00Z"]),
        "expired bundle",
    );
    assert_one_line_error(
        &v.verify(&bundle, &["--installed-version", "2.2.0"]),
        "downgrade: version 2.1.0 is below the installed 2.2.0",
    );
    assert_success(&v.verify(
        &bundle,
        &["--installed-version", "2.2.0", "--allow-downgrade"],
    ));
    assert_one_line_error(
        &v.verify(
            &bundle,
            &[
                "--installed-version",
                "2.2.0",
                "--allow-downgrade",
                "--rollback-floor",
                "2.2.0",
            ],
        ),
        "downgrade below the minimum",
    );
}

#[test]
fn expiry_options_set_the_expiry_and_a_re_sign_can_extend_it() {
    let v = Vendor::new();
    let o = v.build(
        "e.nvfw",
        &[
            "--expires-at",
            "2099-01-01T00:00:00+01:00",
            "-o",
            "json",
            "--key",
            &v.s("acme.key"),
        ],
    );
    assert_success(&o);
    assert_eq!(json(&o)["manifest"]["expires"], "2098-12-31T23:00:00Z");

    let o = v.build("d.nvfw", &["-o", "json"]);
    let doc = json(&o);
    let created = time::OffsetDateTime::parse(
        doc["manifest"]["created"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        doc["manifest"]["expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires - created, time::Duration::days(180), "the default");

    let bundle = v.path("d.nvfw");
    let out = v.path("d2.nvfw");
    let o = run(&[
        "-o",
        "json",
        "firmware",
        "sign",
        p(&bundle),
        "--key",
        &v.s("acme.key"),
        "--expires-at",
        "2099-06-01T00:00:00Z",
        "--out",
        p(&out),
    ]);
    assert_success(&o);
    assert_eq!(json(&o)["manifest"]["expires"], "2099-06-01T00:00:00Z");
    assert_success(&v.verify(&out, &["--at", "2099-05-01T00:00:00Z"]));
}

#[test]
fn a_build_with_source_date_epoch_is_reproducible() {
    let v = Vendor::new();
    let key = v.s("acme.key");
    let env = [("SOURCE_DATE_EPOCH", "1767225600")];
    for out in ["r1.nvfw", "r2.nvfw"] {
        let args = v.build_args(
            "acme-nas",
            "1.0.0",
            out,
            &["--class", "service", "--key", &key],
        );
        assert_success(&run_env(&strs(&args), &env));
    }
    let (a, b) = (
        std::fs::read(v.path("r1.nvfw")).unwrap(),
        std::fs::read(v.path("r2.nvfw")).unwrap(),
    );
    assert_eq!(a, b, "ed25519 signatures are deterministic too");
    let o = run(&["-o", "json", "firmware", "inspect", &v.s("r1.nvfw")]);
    assert_eq!(json(&o)["manifest"]["created"], "2026-01-01T00:00:00Z");
    assert_eq!(json(&o)["manifest"]["class"], "service");
}

#[test]
fn bad_build_input_names_the_field_and_writes_nothing() {
    let v = Vendor::new();
    let o = v.build("x.nvfw", &["--payload-name", "manifest.json"]);
    assert_one_line_error(
        &o,
        "manifest.payload.name: \"manifest.json\" is the name of a bundle member",
    );
    let args = v.build_args(
        "acme-nas",
        "2.1.0",
        "x.nvfw",
        &["--class", "reboot", "--min-version", "3.0.0"],
    );
    let o = run(&strs(&args));
    assert_one_line_error(
        &o,
        "manifest.min-version: 3.0.0 is above the bundle's own version 2.1.0",
    );
    assert!(!v.path("x.nvfw").exists());

    let o = run(&strs(&v.build_args(
        "acme nas",
        "1.0.0",
        "x.nvfw",
        &["--class", "reboot"],
    )));
    assert_one_line_error(&o, "manifest.product: \"acme nas\" holds ' '");

    // clap refuses a bad version, class or a double expiry (exit 2).
    let o = v.build(
        "x.nvfw",
        &["--expires-in", "1d", "--expires-at", "2099-01-01T00:00:00Z"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = run(&["firmware", "build", "--class", "sometimes"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(!v.path("x.nvfw").exists());

    let o = run(&[
        "firmware",
        "verify",
        &v.s("x.nvfw"),
        "--trusted-keys",
        &v.s("no-such-dir"),
    ]);
    assert_one_line_error(&o, "--trusted-keys: cannot read");
}
