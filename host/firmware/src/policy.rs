//! What an appliance accepts: whose signatures, which product and board,
//! which versions, at what time. The checks of a signed manifest against
//! it, in the order they run, are [`Policy::check_manifest`].

use crate::error::BundleError;
use crate::manifest::{rfc3339, Manifest};
use nasvisor_signing::VerifyingKey;
use semver::Version;
use time::OffsetDateTime;

/// What a verifier accepts. On an appliance every field comes from the
/// booted slot (its baked-in keys, product and board) and the firmware
/// state (installed version, rollback floor); the CLI takes them as flags.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The keys whose signatures are trusted.
    pub trusted: Vec<VerifyingKey>,
    /// This product; `None` checks no product.
    pub product: Option<String>,
    /// This board; `None` checks no board.
    pub board: Option<String>,
    /// The installed version; `None` checks no downgrade.
    pub installed: Option<Version>,
    /// The rollback floor: the highest `min-version` of every bundle
    /// installed so far. A bundle below it is refused, always.
    pub floor: Option<Version>,
    /// Accept a version below the installed one (still not below the
    /// floor).
    pub allow_downgrade: bool,
    /// The time expiry is judged at.
    pub now: OffsetDateTime,
}

impl Policy {
    /// A policy that trusts `trusted`, at the current time, and checks
    /// nothing else until told.
    pub fn new(trusted: Vec<VerifyingKey>) -> Policy {
        Policy {
            trusted,
            product: None,
            board: None,
            installed: None,
            floor: None,
            allow_downgrade: false,
            now: OffsetDateTime::now_utc(),
        }
    }

    /// The checks of a manifest whose signature holds, in this order:
    /// product, board, expiry, rollback floor, installed version.
    pub fn check_manifest(&self, m: &Manifest) -> Result<(), BundleError> {
        if let Some(product) = &self.product {
            if &m.product != product {
                return Err(BundleError::WrongProduct {
                    bundle: m.product.clone(),
                    expected: product.clone(),
                });
            }
        }
        if let Some(board) = &self.board {
            if !m.compatible.contains(board) {
                return Err(BundleError::IncompatibleBoard {
                    board: board.clone(),
                    compatible: m.compatible.clone(),
                });
            }
        }
        if self.now >= m.expires {
            return Err(BundleError::Expired {
                expires: rfc3339(m.expires),
                now: rfc3339(self.now),
            });
        }
        if let Some(floor) = &self.floor {
            if &m.version < floor {
                return Err(BundleError::BelowRollbackFloor {
                    version: m.version.to_string(),
                    floor: floor.to_string(),
                });
            }
        }
        if let Some(installed) = &self.installed {
            if &m.version < installed && !self.allow_downgrade {
                return Err(BundleError::Downgrade {
                    version: m.version.to_string(),
                    installed: installed.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The rollback floor after installing `m` over `floor`: the higher of the
/// two. The install step records it; it never goes down.
pub fn next_floor(floor: Option<&Version>, m: &Manifest) -> Version {
    match floor {
        Some(f) if f > &m.min_version => f.clone(),
        _ => m.min_version.clone(),
    }
}
