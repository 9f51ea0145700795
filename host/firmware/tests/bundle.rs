//! Bundles built, signed, tampered with and verified as files, with real
//! ed25519 keys read from PEM files: every refusal, and that a refusal
//! before the payload reads none of it and that a refused payload is never
//! committed.

use nasvisor_firmware::{
    build, sign, verify, verify_file, BuildSpec, BundleError, Class, DigestOnly, FileSink,
    Manifest, OpenBundle, PayloadSink, Policy, SIGNATURE_DOMAIN,
};
use nasvisor_signing::{
    generate_key, key_id, read_public_keys_in, read_signing_key, write_keypair, SigningKey,
    VerifyingKey,
};
use semver::Version;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use time::macros::datetime;
use time::OffsetDateTime;

// ---------------------------------------------------------------- helpers

/// A vendor: a key pair written as files, and a trusted-key directory
/// holding its public key.
struct Vendor {
    dir: tempfile::TempDir,
    key: SigningKey,
}

impl Vendor {
    fn new() -> Vendor {
        let dir = tempfile::tempdir().unwrap();
        let trusted = dir.path().join("trusted");
        std::fs::create_dir(&trusted).unwrap();
        let key_path = dir.path().join("vendor.key");
        write_keypair(&generate_key(), &key_path, &trusted.join("vendor.pub")).unwrap();
        let key = read_signing_key(&key_path).unwrap();
        Vendor { dir, key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn trusted(&self) -> Vec<VerifyingKey> {
        read_public_keys_in(&self.path("trusted"))
            .unwrap()
            .into_iter()
            .map(|t| t.key)
            .collect()
    }

    fn id(&self) -> String {
        key_id(&self.key.verifying_key())
    }

    /// A payload file of `len` bytes.
    fn payload(&self, len: usize) -> PathBuf {
        let p = self.path("rootfs.img");
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A signed bundle of a 3000-byte payload, version 2.1.0 (floor 2.0.0).
    fn bundle(&self) -> PathBuf {
        let out = self.path("update.nvfw");
        build(&spec(), &self.payload(3000), Some(&self.key), &out).unwrap();
        out
    }

    fn policy(&self) -> Policy {
        Policy {
            product: Some("acme-nas".into()),
            board: Some("acme-nas4".into()),
            installed: Some(Version::new(2, 0, 1)),
            floor: Some(Version::new(1, 5, 0)),
            now: datetime!(2026-02-01 00:00 UTC),
            ..Policy::new(self.trusted())
        }
    }
}

fn spec() -> BuildSpec {
    BuildSpec {
        product: "acme-nas".into(),
        compatible: vec!["acme-nas4".into(), "acme-nas8".into()],
        version: Version::new(2, 1, 0),
        min_version: Some(Version::new(2, 0, 0)),
        class: Class::Reboot,
        created: datetime!(2026-01-10 09:00 UTC),
        expires: datetime!(2026-07-09 09:00 UTC),
        payload_name: None,
    }
}

/// A reader that counts what was read from it.
struct Counting<R> {
    inner: R,
    read: Rc<RefCell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.read.borrow_mut() += n as u64;
        Ok(n)
    }
}

/// Where the payload's bytes start in a signed bundle whose manifest has
/// `manifest_len` bytes: three headers, the manifest and its padding, the
/// signature block.
fn payload_offset(manifest_len: usize) -> u64 {
    (512 + manifest_len.div_ceil(512) * 512 + 512 + 512 + 512) as u64
}

/// Verifies `bytes` and asserts the refusal came before any payload byte
/// was read.
fn refused_before_payload(bytes: &[u8], policy: &Policy) -> BundleError {
    let read = Rc::new(RefCell::new(0));
    let reader = Counting {
        inner: bytes,
        read: read.clone(),
    };
    let log = Rc::new(RefCell::new(SinkLog::default()));
    let e = verify(reader, policy, Recording(log.clone())).unwrap_err();
    let manifest_len = manifest_member(bytes).len();
    assert!(
        *read.borrow() <= payload_offset(manifest_len),
        "{e}: read {} bytes, the payload starts at {}",
        read.borrow(),
        payload_offset(manifest_len)
    );
    assert_eq!(log.borrow().written, 0, "{e}: the sink got bytes");
    assert!(!log.borrow().committed);
    e
}

/// The bytes of manifest.json in a bundle.
fn manifest_member(bytes: &[u8]) -> Vec<u8> {
    OpenBundle::open(bytes)
        .map(|o| o.manifest_bytes().to_vec())
        .unwrap_or_default()
}

#[derive(Default, Debug)]
struct SinkLog {
    written: u64,
    committed: bool,
    discarded: bool,
}

/// A sink that records what happens to it.
struct Recording(Rc<RefCell<SinkLog>>);

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().written += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PayloadSink for Recording {
    type Output = ();
    fn commit(self) -> std::io::Result<()> {
        self.0.borrow_mut().committed = true;
        Ok(())
    }
    fn discard(self) {
        self.0.borrow_mut().discarded = true;
    }
}

/// A bundle written member by member, for layouts `build` never writes.
fn raw_bundle(members: &[(&str, &[u8])], tail: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    let mut bytes = b.into_inner().unwrap();
    bytes.extend_from_slice(tail);
    bytes
}

/// A manifest of a `service` bundle of `payload`, naming `key` as its
/// signer, as `build` would write it.
fn manifest_for(key: &SigningKey, payload: &[u8]) -> Manifest {
    Manifest {
        format: 1,
        product: "acme-nas".into(),
        compatible: vec!["acme-nas4".into()],
        version: Version::new(2, 1, 0),
        min_version: Version::new(2, 0, 0),
        class: Class::Service,
        created: datetime!(2026-01-10 09:00 UTC),
        expires: datetime!(2026-07-09 09:00 UTC),
        payload: nasvisor_firmware::Payload {
            name: "service.tar".into(),
            size: payload.len() as u64,
            sha256: nasvisor_signing::sha256_hex(payload),
        },
        signer: Some(key_id(&key.verifying_key())),
    }
}

/// `key`'s signature of manifest bytes under `domain`.
fn sig_of(key: &SigningKey, domain: &[u8], manifest: &[u8]) -> Vec<u8> {
    nasvisor_signing::sign(key, domain, manifest)
        .to_bytes()
        .to_vec()
}

/// A bundle of these exact manifest bytes, signed by `key` under `domain`,
/// and `payload` as `service.tar`.
fn bundle_of(manifest: &[u8], key: &SigningKey, domain: &[u8], payload: &[u8]) -> Vec<u8> {
    raw_bundle(
        &[
            ("manifest.json", manifest),
            ("manifest.sig", &sig_of(key, domain, manifest)),
            ("service.tar", payload),
        ],
        &[],
    )
}

fn replace_once(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in the bundle", String::from_utf8_lossy(from)));
    bytes[at..at + to.len()].copy_from_slice(to);
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- good bundles

#[test]
fn a_signed_bundle_verifies_and_its_payload_lands_in_the_file_sink() {
    let v = Vendor::new();
    let bundle = v.bundle();
    let dest = v.path("out/slot.img");
    std::fs::create_dir(v.path("out")).unwrap();
    let ok = verify_file(&bundle, &v.policy(), FileSink::create(&dest).unwrap()).unwrap();
    assert_eq!(ok.signer(), v.id());
    let m = ok.manifest();
    assert_eq!(m.version, Version::new(2, 1, 0));
    assert_eq!(m.class, Class::Reboot);
    assert_eq!(m.payload.name, "rootfs.img");
    assert_eq!(m.payload.size, 3000);
    assert_eq!(m.signer.as_deref(), Some(v.id().as_str()));
    assert_eq!(ok.output(), &dest);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(v.path("rootfs.img")).unwrap()
    );
    assert_eq!(files_in(&v.path("out")), vec!["slot.img"]);
}

#[test]
fn the_bundle_is_a_plain_tar_of_manifest_signature_and_payload() {
    let v = Vendor::new();
    let bundle = v.bundle();
    let mut archive = tar::Archive::new(std::fs::File::open(&bundle).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["manifest.json", "manifest.sig", "rootfs.img"]);
    let len = std::fs::metadata(&bundle).unwrap().len();
    assert_eq!(len % 512, 0);
}

#[test]
fn an_unsigned_build_signed_later_verifies_and_sign_can_extend_the_expiry() {
    let v = Vendor::new();
    let bundle = v.path("unsigned.nvfw");
    let m = build(&spec(), &v.payload(100), None, &bundle).unwrap();
    assert_eq!(m.signer, None);
    let e = verify_file(&bundle, &v.policy(), DigestOnly).unwrap_err();
    assert!(matches!(e, BundleError::Unsigned), "{e}");

    let later = datetime!(2027-01-01 00:00 UTC);
    let signed = sign(&bundle, &v.key, Some(later), &bundle).unwrap();
    assert_eq!(signed.signer.as_deref(), Some(v.id().as_str()));
    assert_eq!(signed.expires, later);
    let policy = Policy {
        now: datetime!(2026-12-01 00:00 UTC),
        ..v.policy()
    };
    let ok = verify_file(&bundle, &policy, Vec::new()).unwrap();
    assert_eq!(ok.output().len(), 100);
    assert_eq!(files_in(v.dir.path()).len(), 4, "no temporary file left");
}

#[test]
fn re_signing_with_another_key_replaces_the_signer() {
    let (a, b) = (Vendor::new(), Vendor::new());
    let bundle = a.bundle();
    let out = a.path("resigned.nvfw");
    sign(&bundle, &b.key, None, &out).unwrap();
    let ok = verify_file(&out, &b.policy(), DigestOnly).unwrap();
    assert_eq!(ok.signer(), b.id());
    let e = verify_file(&out, &a.policy(), DigestOnly).unwrap_err();
    assert!(matches!(e, BundleError::UntrustedSigner { .. }), "{e}");
}

#[test]
fn the_same_version_reinstalls_and_an_allowed_downgrade_passes_above_the_floor() {
    let v = Vendor::new();
    let bundle = std::fs::read(v.bundle()).unwrap();
    let same = Policy {
        installed: Some(Version::new(2, 1, 0)),
        ..v.policy()
    };
    let _ = verify(&bundle[..], &same, DigestOnly).unwrap();
    let allowed = Policy {
        installed: Some(Version::new(3, 0, 0)),
        allow_downgrade: true,
        floor: Some(Version::new(2, 1, 0)),
        ..v.policy()
    };
    let _ = verify(&bundle[..], &allowed, DigestOnly).unwrap();
    let unchecked = Policy {
        now: datetime!(2026-02-01 00:00 UTC),
        ..Policy::new(v.trusted())
    };
    let ok = verify(&bundle[..], &unchecked, DigestOnly).unwrap();
    assert_eq!(
        nasvisor_firmware::next_floor(Some(&Version::new(1, 0, 0)), ok.manifest()),
        Version::new(2, 0, 0)
    );
    assert_eq!(
        nasvisor_firmware::next_floor(Some(&Version::new(2, 5, 0)), ok.manifest()),
        Version::new(2, 5, 0)
    );
}

// ---------------------------------------------------------------- refusals before the payload

#[test]
fn a_tampered_manifest_is_refused_before_the_payload() {
    let v = Vendor::new();
    let mut bytes = std::fs::read(v.bundle()).unwrap();
    replace_once(
        &mut bytes,
        b"\"version\": \"2.1.0\"",
        b"\"version\": \"2.9.0\"",
    );
    let e = refused_before_payload(&bytes, &v.policy());
    assert!(
        matches!(&e, BundleError::BadSignature { key_id } if key_id == &v.id()),
        "{e}"
    );
    assert!(e.to_string().starts_with("tampered manifest"), "{e}");
}

#[test]
fn a_bundle_signed_by_an_unknown_key_is_refused_naming_the_key() {
    let (v, stranger) = (Vendor::new(), Vendor::new());
    let bytes = std::fs::read(stranger.bundle()).unwrap();
    let e = refused_before_payload(&bytes, &v.policy());
    assert!(
        matches!(&e, BundleError::UntrustedSigner { key_id } if key_id == &stranger.id()),
        "{e}"
    );
}

#[test]
fn a_forged_signature_that_claims_a_trusted_key_is_a_tampered_manifest() {
    let (v, forger) = (Vendor::new(), Vendor::new());
    let payload = b"service payload";
    let mut m = manifest_for(&forger.key, payload);
    m.signer = Some(v.id());
    let bundle = bundle_of(&m.to_bytes(), &forger.key, SIGNATURE_DOMAIN, payload);
    let e = refused_before_payload(&bundle, &v.policy());
    assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");
}

#[test]
fn a_signature_of_another_domain_does_not_verify() {
    // The same key signing the same bytes as a plugin manifest.
    let v = Vendor::new();
    let m = manifest_for(&v.key, b"x");
    let bundle = bundle_of(&m.to_bytes(), &v.key, b"nasvisor-plugin-v1\n", b"x");
    let e = refused_before_payload(&bundle, &v.policy());
    assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");
}

#[test]
fn a_manifest_naming_another_signer_than_the_key_that_signed_it_is_refused() {
    let v = Vendor::new();
    let mut m = manifest_for(&v.key, b"x");
    m.signer = Some("0000000000000000".into());
    let bundle = bundle_of(&m.to_bytes(), &v.key, SIGNATURE_DOMAIN, b"x");
    let e = refused_before_payload(&bundle, &v.policy());
    assert!(
        matches!(&e, BundleError::InvalidField { field, .. } if field == "manifest.signer"),
        "{e}"
    );
}

#[test]
fn no_trusted_keys_trust_nothing() {
    let v = Vendor::new();
    let bytes = std::fs::read(v.bundle()).unwrap();
    let policy = Policy {
        trusted: vec![],
        ..v.policy()
    };
    let e = refused_before_payload(&bytes, &policy);
    assert!(matches!(e, BundleError::NoTrustedKeys), "{e}");
}

#[test]
fn another_product_or_board_is_refused() {
    let v = Vendor::new();
    let bytes = std::fs::read(v.bundle()).unwrap();
    let other_product = Policy {
        product: Some("zeta-nas".into()),
        ..v.policy()
    };
    let e = refused_before_payload(&bytes, &other_product);
    assert!(matches!(e, BundleError::WrongProduct { .. }), "{e}");
    let other_board = Policy {
        board: Some("acme-nas2".into()),
        ..v.policy()
    };
    let e = refused_before_payload(&bytes, &other_board);
    assert!(matches!(e, BundleError::IncompatibleBoard { .. }), "{e}");
    assert!(
        e.to_string().contains("acme-nas4, acme-nas8") && e.to_string().contains("acme-nas2"),
        "{e}"
    );
    let eight = Policy {
        board: Some("acme-nas8".into()),
        ..v.policy()
    };
    let _ = verify(&bytes[..], &eight, DigestOnly).unwrap();
}

#[test]
fn an_expired_bundle_is_refused_from_its_expiry_on() {
    let v = Vendor::new();
    let bytes = std::fs::read(v.bundle()).unwrap();
    let at_expiry = Policy {
        now: datetime!(2026-07-09 09:00 UTC),
        ..v.policy()
    };
    let e = refused_before_payload(&bytes, &at_expiry);
    assert!(matches!(e, BundleError::Expired { .. }), "{e}");
    assert!(e.to_string().contains("2026-07-09T09:00:00Z"), "{e}");
    let just_before = Policy {
        now: datetime!(2026-07-09 08:59:59 UTC),
        ..v.policy()
    };
    let _ = verify(&bytes[..], &just_before, DigestOnly).unwrap();
}

#[test]
fn a_downgrade_is_refused_below_the_floor_always_and_below_the_installed_unless_allowed() {
    let v = Vendor::new();
    let bytes = std::fs::read(v.bundle()).unwrap();
    let floor = Policy {
        floor: Some(Version::new(2, 2, 0)),
        installed: None,
        allow_downgrade: true,
        ..v.policy()
    };
    let e = refused_before_payload(&bytes, &floor);
    assert!(
        matches!(&e, BundleError::BelowRollbackFloor { version, floor } if version == "2.1.0" && floor == "2.2.0"),
        "{e}"
    );
    let installed = Policy {
        installed: Some(Version::new(2, 1, 1)),
        ..v.policy()
    };
    let e = refused_before_payload(&bytes, &installed);
    assert!(matches!(e, BundleError::Downgrade { .. }), "{e}");
    // A release is above its own pre-releases.
    let pre = Policy {
        installed: Some(Version::parse("2.1.0-rc.1").unwrap()),
        ..v.policy()
    };
    let _ = verify(&bytes[..], &pre, DigestOnly).unwrap();
}

#[test]
fn an_unknown_format_version_is_refused() {
    let v = Vendor::new();
    let mut value = serde_json::to_value(manifest_for(&v.key, b"x")).unwrap();
    value["format"] = 2.into();
    value["delta"] = true.into();
    let bytes = serde_json::to_vec(&value).unwrap();
    let bundle = bundle_of(&bytes, &v.key, SIGNATURE_DOMAIN, b"x");
    let e = refused_before_payload(&bundle, &v.policy());
    assert!(
        matches!(&e, BundleError::UnsupportedFormat { found, supported: 1 } if found == "2"),
        "{e}"
    );
}

#[test]
fn an_oversize_manifest_is_refused_unread() {
    let v = Vendor::new();
    let huge = vec![b' '; 1 << 20];
    let bundle = raw_bundle(&[("manifest.json", &huge), ("p", b"x")], &[]);
    let read = Rc::new(RefCell::new(0));
    let reader = Counting {
        inner: &bundle[..],
        read: read.clone(),
    };
    let e = verify(reader, &v.policy(), DigestOnly).unwrap_err();
    assert!(
        matches!(
            e,
            BundleError::ManifestTooLarge {
                size: 1048576,
                max: 65536
            }
        ),
        "{e}"
    );
    assert_eq!(*read.borrow(), 512, "only the header was read");
}

#[test]
fn a_payload_member_other_than_the_signed_one_is_refused() {
    let v = Vendor::new();
    let payload = b"service payload";
    let bytes = manifest_for(&v.key, payload).to_bytes();
    let sig = sig_of(&v.key, SIGNATURE_DOMAIN, &bytes);
    let renamed = raw_bundle(
        &[
            ("manifest.json", &bytes),
            ("manifest.sig", &sig),
            ("other.tar", payload),
        ],
        &[],
    );
    let e = refused_before_payload(&renamed, &v.policy());
    assert!(
        matches!(e, BundleError::PayloadMismatch { field: "name", .. }),
        "{e}"
    );
    let longer = raw_bundle(
        &[
            ("manifest.json", &bytes),
            ("manifest.sig", &sig),
            ("service.tar", b"service payload!"),
        ],
        &[],
    );
    let e = refused_before_payload(&longer, &v.policy());
    assert!(
        matches!(e, BundleError::PayloadMismatch { field: "size", .. }),
        "{e}"
    );
}

#[test]
fn missing_and_misplaced_members_are_refused() {
    let v = Vendor::new();
    let payload = b"p";
    let bytes = manifest_for(&v.key, payload).to_bytes();
    let sig = sig_of(&v.key, SIGNATURE_DOMAIN, &bytes);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (raw_bundle(&[], &[]), "it ends where manifest.json belongs"),
        (
            raw_bundle(&[("manifest.json", &bytes)], &[]),
            "it ends where the payload belongs",
        ),
        (
            raw_bundle(&[("manifest.json", &bytes), ("manifest.sig", &sig)], &[]),
            "it ends where the payload belongs",
        ),
        (
            raw_bundle(
                &[
                    ("service.tar", payload),
                    ("manifest.json", &bytes),
                    ("manifest.sig", &sig),
                ],
                &[],
            ),
            "member \"service.tar\" where manifest.json (the first member) belongs",
        ),
        (
            raw_bundle(
                &[
                    ("manifest.json", &bytes),
                    ("manifest.sig", &sig),
                    ("manifest.sig", &sig),
                ],
                &[],
            ),
            "member \"manifest.sig\" where the payload belongs",
        ),
        (
            raw_bundle(
                &[
                    ("manifest.json", &bytes),
                    ("manifest.sig", &sig[..63]),
                    ("service.tar", payload),
                ],
                &[],
            ),
            "manifest.sig: 63 bytes",
        ),
    ];
    for (bundle, needle) in cases {
        let e = verify(&bundle[..], &v.policy(), DigestOnly).unwrap_err();
        assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
    }
}

#[test]
fn truncation_anywhere_is_refused() {
    let v = Vendor::new();
    let bytes = std::fs::read(v.bundle()).unwrap();
    let manifest_len = manifest_member(&bytes).len();
    let start = payload_offset(manifest_len) as usize;
    for (cut, code) in [
        (100, "truncated"),
        (700, "truncated"),
        (start - 10, "truncated"),
        (start + 1000, "truncated"),
        (bytes.len() - 600, "truncated"),
        (bytes.len() - 1, "truncated"),
    ] {
        let log = Rc::new(RefCell::new(SinkLog::default()));
        let e = verify(&bytes[..cut], &v.policy(), Recording(log.clone())).unwrap_err();
        assert_eq!(e.code(), code, "cut at {cut}: {e}");
        assert!(!log.borrow().committed, "cut at {cut}");
    }
    let e = verify(&bytes[..start + 1000], &v.policy(), DigestOnly).unwrap_err();
    assert!(
        matches!(
            e,
            BundleError::PayloadTruncated {
                size: 3000,
                got: 1000
            }
        ),
        "{e}"
    );
}

// ---------------------------------------------------------------- refusals of the payload

#[test]
fn a_tampered_payload_is_streamed_but_never_committed() {
    let v = Vendor::new();
    let mut bytes = std::fs::read(v.bundle()).unwrap();
    let at = payload_offset(manifest_member(&bytes).len()) as usize + 2000;
    bytes[at] ^= 0xff;
    let log = Rc::new(RefCell::new(SinkLog::default()));
    let e = verify(&bytes[..], &v.policy(), Recording(log.clone())).unwrap_err();
    assert!(matches!(e, BundleError::PayloadTampered { .. }), "{e}");
    let log = log.borrow();
    assert_eq!(log.written, 3000, "the payload streamed into the sink");
    assert!(log.discarded && !log.committed, "{log:?}");
}

#[test]
fn a_refused_payload_leaves_no_file_behind() {
    let v = Vendor::new();
    let bundle = v.bundle();
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = payload_offset(manifest_member(&bytes).len()) as usize + 10;
    bytes[at] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    std::fs::create_dir(v.path("out")).unwrap();
    let dest = v.path("out/slot.img");
    let e = verify_file(&bundle, &v.policy(), FileSink::create(&dest).unwrap()).unwrap_err();
    assert!(matches!(e, BundleError::PayloadTampered { .. }), "{e}");
    assert!(
        files_in(&v.path("out")).is_empty(),
        "{:?}",
        files_in(&v.path("out"))
    );
}

#[test]
fn a_member_or_data_after_the_payload_is_refused() {
    let v = Vendor::new();
    let payload = b"service payload";
    let bytes = manifest_for(&v.key, payload).to_bytes();
    let sig = sig_of(&v.key, SIGNATURE_DOMAIN, &bytes);
    let members: [(&str, &[u8]); 4] = [
        ("manifest.json", &bytes),
        ("manifest.sig", &sig),
        ("service.tar", payload),
        ("extra", b"more"),
    ];
    let log = Rc::new(RefCell::new(SinkLog::default()));
    let e = verify(
        &raw_bundle(&members, &[])[..],
        &v.policy(),
        Recording(log.clone()),
    )
    .unwrap_err();
    assert!(
        matches!(&e, BundleError::UnexpectedMember { found, .. } if found == "extra"),
        "{e}"
    );
    assert!(log.borrow().discarded && !log.borrow().committed);

    let e = verify(
        &raw_bundle(&members[..3], b"appended")[..],
        &v.policy(),
        DigestOnly,
    )
    .unwrap_err();
    assert!(matches!(e, BundleError::TrailingData { .. }), "{e}");
    // GNU tar pads to a 10 KiB record: still a good bundle.
    let _ = verify(
        &raw_bundle(&members[..3], &[0u8; 8192])[..],
        &v.policy(),
        DigestOnly,
    )
    .unwrap();
}

#[test]
fn a_failing_sink_fails_the_verification_and_is_discarded() {
    struct Full(Rc<RefCell<bool>>);
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("no space left"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl PayloadSink for Full {
        type Output = ();
        fn commit(self) -> std::io::Result<()> {
            panic!("a failed sink is never committed")
        }
        fn discard(self) {
            *self.0.borrow_mut() = true;
        }
    }
    let v = Vendor::new();
    let bytes = std::fs::read(v.bundle()).unwrap();
    let discarded = Rc::new(RefCell::new(false));
    let e = verify(&bytes[..], &v.policy(), Full(discarded.clone())).unwrap_err();
    assert!(matches!(e, BundleError::Sink { .. }), "{e}");
    assert!(*discarded.borrow());
}

// ---------------------------------------------------------------- building

#[test]
fn build_refuses_bad_fields_and_leaves_no_bundle() {
    let v = Vendor::new();
    let payload = v.payload(10);
    let out = v.path("bad.nvfw");
    type Change = fn(&mut BuildSpec);
    let cases: Vec<(Change, &str)> = vec![
        (|s| s.product = "acme nas".into(), "manifest.product"),
        (|s| s.compatible.clear(), "manifest.compatible"),
        (
            |s| s.min_version = Some(Version::new(9, 0, 0)),
            "manifest.min-version",
        ),
        (
            |s| s.expires = datetime!(2020-01-01 00:00 UTC),
            "manifest.expires",
        ),
        (
            |s| s.payload_name = Some("manifest.json".into()),
            "manifest.payload.name",
        ),
    ];
    for (change, field) in cases {
        let mut s = spec();
        change(&mut s);
        let e = build(&s, &payload, Some(&v.key), &out).unwrap_err();
        assert!(
            matches!(&e, BundleError::InvalidField { field: f, .. } if f == field),
            "{e}"
        );
        assert!(!out.exists());
    }
    let e = build(&spec(), v.dir.path(), Some(&v.key), &out).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn build_defaults_the_floor_to_the_version_and_names_the_payload_after_its_file() {
    let v = Vendor::new();
    let s = BuildSpec {
        min_version: None,
        payload_name: None,
        created: OffsetDateTime::now_utc(),
        expires: OffsetDateTime::now_utc() + time::Duration::days(1),
        ..spec()
    };
    let m = build(&s, &v.payload(5), Some(&v.key), &v.path("b.nvfw")).unwrap();
    assert_eq!(m.min_version, m.version);
    assert_eq!(m.payload.name, "rootfs.img");
    assert_eq!(m.created.nanosecond(), 0);
    let _ = verify_file(&v.path("b.nvfw"), &Policy::new(v.trusted()), DigestOnly).unwrap();
}

#[test]
fn sign_refuses_a_bundle_whose_payload_is_not_its_manifest_s() {
    let v = Vendor::new();
    let bundle = v.path("unsigned.nvfw");
    build(&spec(), &v.payload(3000), None, &bundle).unwrap();
    let mut bytes = std::fs::read(&bundle).unwrap();
    let manifest_len = manifest_member(&bytes).len();
    // Unsigned: no signature block before the payload.
    let at = payload_offset(manifest_len) as usize - 1024 + 5;
    bytes[at] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    let out = v.path("signed.nvfw");
    let e = sign(&bundle, &v.key, None, &out).unwrap_err();
    assert!(matches!(e, BundleError::PayloadTampered { .. }), "{e}");
    assert!(!out.exists());
}

#[test]
fn every_refusal_has_its_own_code() {
    let v = Vendor::new();
    let bundle = std::fs::read(v.bundle()).unwrap();
    let mut tampered = bundle.clone();
    replace_once(&mut tampered, b"2.1.0", b"2.9.0");
    let stranger = Vendor::new();
    let codes = [
        verify(&tampered[..], &v.policy(), DigestOnly),
        verify(&bundle[..], &stranger.policy(), DigestOnly),
        verify(
            &bundle[..],
            &Policy {
                board: Some("x".into()),
                ..v.policy()
            },
            DigestOnly,
        ),
        verify(
            &bundle[..],
            &Policy {
                now: datetime!(2030-01-01 00:00 UTC),
                ..v.policy()
            },
            DigestOnly,
        ),
        verify(
            &bundle[..],
            &Policy {
                installed: Some(Version::new(3, 0, 0)),
                ..v.policy()
            },
            DigestOnly,
        ),
    ]
    .map(|r| r.unwrap_err().code());
    assert_eq!(
        codes,
        [
            "tampered-manifest",
            "untrusted-signer",
            "incompatible-board",
            "expired",
            "downgrade"
        ]
    );
}
