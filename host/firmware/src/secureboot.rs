//! UEFI Secure Boot as the board's firmware reports it (its EFI variables,
//! through efivarfs), and whether a boot image would be let through: its
//! Authenticode signature checked (`sbverify`) against the X.509
//! certificates of the `db` variable and none of `dbx`.
//!
//! The installer asks before it marks a slot (docs/firmware.md, "Secure
//! Boot"): an image the firmware refuses does not fall back by itself
//! (systemd-boot returns to the firmware, which goes on to its next boot
//! option), so it must never be marked.

use std::path::Path;
use std::process::Command;

/// The EFI global variables' vendor GUID (`SecureBoot`, `SetupMode`).
const GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// The image security databases' vendor GUID (`db`, `dbx`).
const IMAGE_SECURITY_DATABASE: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
/// `EFI_CERT_X509_GUID` (a5c059a1-94e4-4aa7-87b5-ab155c2bf072) as stored:
/// its first three fields little-endian.
const CERT_X509: [u8; 16] = [
    0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72,
];
/// The efivarfs file's header: the variable's attributes.
const ATTRIBUTES: usize = 4;
/// An `EFI_SIGNATURE_LIST` header: type GUID, list size, header size,
/// signature size.
const LIST_HEADER: usize = 28;
/// An `EFI_SIGNATURE_DATA`'s owner GUID before its data.
const OWNER: usize = 16;

/// The board's Secure Boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureBoot {
    /// Not booted through UEFI (no efivarfs), or it has no Secure Boot.
    Unsupported,
    /// Off: any image boots.
    Off,
    /// Setup mode: no platform key enrolled, nothing is checked.
    SetupMode,
    /// On: only images the `db` lets through boot.
    Enforcing,
}

impl SecureBoot {
    /// As the status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            SecureBoot::Unsupported => "unsupported",
            SecureBoot::Off => "off",
            SecureBoot::SetupMode => "setup-mode",
            SecureBoot::Enforcing => "enforcing",
        }
    }
}

/// One byte of a boolean global variable; `None` when it does not exist.
fn flag(efivars: &Path, name: &str) -> Option<bool> {
    let bytes = std::fs::read(efivars.join(format!("{name}-{GLOBAL_VARIABLE}"))).ok()?;
    bytes.get(ATTRIBUTES).map(|b| *b == 1)
}

/// The board's Secure Boot, read from efivarfs at `efivars`
/// (`/sys/firmware/efi/efivars`).
pub fn secure_boot(efivars: &Path) -> SecureBoot {
    match (flag(efivars, "SecureBoot"), flag(efivars, "SetupMode")) {
        (None, _) => SecureBoot::Unsupported,
        (_, Some(true)) => SecureBoot::SetupMode,
        (Some(true), _) => SecureBoot::Enforcing,
        (Some(false), _) => SecureBoot::Off,
    }
}

/// The X.509 certificates (DER) of an image security database variable
/// as efivarfs gives it (attributes, then `EFI_SIGNATURE_LIST`s). Lists of
/// other types (hashes) are skipped: an image is matched by its signer.
pub fn x509_certificates(variable: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut rest = variable
        .get(ATTRIBUTES..)
        .ok_or("shorter than its attributes")?;
    let mut certs = Vec::new();
    while !rest.is_empty() {
        let u32_at = |at: usize| -> Result<usize, String> {
            rest.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| "a signature list is cut short".to_string())
        };
        let (list_size, header_size, signature_size) = (u32_at(16)?, u32_at(20)?, u32_at(24)?);
        if list_size < LIST_HEADER + header_size || list_size > rest.len() {
            return Err(format!(
                "a signature list of {list_size} bytes does not fit (header {header_size}, {} bytes left)",
                rest.len()
            ));
        }
        let body = &rest[LIST_HEADER + header_size..list_size];
        if rest[..16] == CERT_X509 {
            if signature_size <= OWNER || body.len() % signature_size != 0 {
                return Err(format!(
                    "a certificate list of {} bytes is not made of {signature_size}-byte entries",
                    body.len()
                ));
            }
            certs.extend(
                body.chunks(signature_size)
                    .map(|entry| entry[OWNER..].to_vec()),
            );
        }
        rest = &rest[list_size..];
    }
    Ok(certs)
}

/// The certificates of database `name` (`db` or `dbx`); none when the
/// variable does not exist.
fn database(efivars: &Path, name: &str) -> Result<Vec<Vec<u8>>, String> {
    let path = efivars.join(format!("{name}-{IMAGE_SECURITY_DATABASE}"));
    match std::fs::read(&path) {
        Ok(bytes) => x509_certificates(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// PEM of a DER certificate (what `sbverify --cert` reads).
fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Whether `image`'s signature chains to certificate `der` (`sbverify`).
fn signed_by(image: &Path, der: &[u8], work: &Path) -> Result<bool, String> {
    let mut cert = tempfile::Builder::new()
        .prefix(".cert-")
        .suffix(".pem")
        .tempfile_in(work)
        .map_err(|e| format!("cannot write a certificate into {}: {e}", work.display()))?;
    std::io::Write::write_all(&mut cert, pem(der).as_bytes())
        .map_err(|e| format!("cannot write a certificate into {}: {e}", work.display()))?;
    let out = Command::new("sbverify")
        .arg("--cert")
        .arg(cert.path())
        .arg(image)
        .output()
        .map_err(|e| format!("cannot run sbverify (sbsigntool): {e}"))?;
    Ok(out.status.success())
}

/// Whether the board's firmware would boot `image` under Secure Boot: it
/// is signed by a certificate of `db` and by none of `dbx`. `work` holds
/// the certificates handed to `sbverify` while it runs.
pub fn check_image(image: &Path, efivars: &Path, work: &Path) -> Result<(), String> {
    for der in database(efivars, "dbx")? {
        if signed_by(image, &der, work)? {
            return Err("it is signed by a certificate the board revoked (dbx)".into());
        }
    }
    let db = database(efivars, "db")?;
    for der in &db {
        if signed_by(image, der, work)? {
            return Ok(());
        }
    }
    Err(format!(
        "it is not signed by any of the {} certificates of the board's db",
        db.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An efivarfs file of signature lists `(type, [data])`.
    fn variable(lists: &[([u8; 16], Vec<Vec<u8>>)]) -> Vec<u8> {
        let mut v = vec![7, 0, 0, 0];
        for (kind, entries) in lists {
            let size = OWNER + entries.first().map_or(0, |e| e.len());
            v.extend_from_slice(kind);
            v.extend_from_slice(&((LIST_HEADER + size * entries.len()) as u32).to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(&(size as u32).to_le_bytes());
            for e in entries {
                v.extend_from_slice(&[0x11; OWNER]);
                v.extend_from_slice(e);
            }
        }
        v
    }

    #[test]
    fn the_certificates_of_a_database_are_read_and_hash_lists_skipped() {
        let sha256 = [
            0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93,
            0x43, 0x28,
        ];
        let v = variable(&[
            (CERT_X509, vec![b"first-cert".to_vec()]),
            (sha256, vec![vec![1; 32], vec![2; 32]]),
            (CERT_X509, vec![b"second".to_vec(), b"third!".to_vec()]),
        ]);
        assert_eq!(
            x509_certificates(&v).unwrap(),
            vec![
                b"first-cert".to_vec(),
                b"second".to_vec(),
                b"third!".to_vec()
            ]
        );
        assert_eq!(
            x509_certificates(&[7, 0, 0, 0]).unwrap(),
            Vec::<Vec<u8>>::new()
        );
    }

    #[test]
    fn a_damaged_database_is_an_error_not_an_empty_one() {
        let v = variable(&[(CERT_X509, vec![b"cert".to_vec()])]);
        let e = x509_certificates(&v[..v.len() - 1]).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        assert!(x509_certificates(&v[..10]).is_err());
        assert!(x509_certificates(&[1, 2]).is_err());
        let mut bad = v.clone();
        bad[ATTRIBUTES + 24..ATTRIBUTES + 28].copy_from_slice(&3u32.to_le_bytes());
        assert!(x509_certificates(&bad).is_err());
    }

    #[test]
    fn secure_boot_is_read_from_its_variables() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(secure_boot(&d.path().join("none")), SecureBoot::Unsupported);
        let set = |name: &str, on: u8| {
            std::fs::write(
                d.path().join(format!("{name}-{GLOBAL_VARIABLE}")),
                [6, 0, 0, 0, on],
            )
            .unwrap()
        };
        set("SecureBoot", 0);
        set("SetupMode", 0);
        assert_eq!(secure_boot(d.path()), SecureBoot::Off);
        set("SecureBoot", 1);
        assert_eq!(secure_boot(d.path()), SecureBoot::Enforcing);
        set("SetupMode", 1);
        assert_eq!(secure_boot(d.path()), SecureBoot::SetupMode);
    }
}
