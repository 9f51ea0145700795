//! Bodies of the cluster routes (`/api/v1/cluster...`).

use crate::error::ApiError;
use crate::validate::{Validate, REDACTED};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Body of `POST /api/v1/cluster/join`. Its `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterJoin {
    /// A member's cluster endpoint, `ip:port`.
    pub address: String,
    /// The token `nasvisor cluster join-token` printed there.
    pub token: String,
}

impl std::fmt::Debug for ClusterJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterJoin")
            .field("address", &self.address)
            .field("token", &REDACTED)
            .finish()
    }
}

impl Validate for ClusterJoin {
    fn validate(&self) -> Result<(), ApiError> {
        if self.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ApiError::field(
                "address",
                format!("{:?} is not an ip:port address", self.address),
            ));
        }
        if self.token.is_empty() || self.token.len() > 4096 || !self.token.is_ascii() {
            return Err(ApiError::field(
                "token",
                "must be the token printed by `nasvisor cluster join-token`",
            ));
        }
        Ok(())
    }
}

/// Largest cluster, hosts.
pub const MAX_CLUSTER_MEMBERS: u32 = 7;

/// Longest join-token lifetime, seconds (7 days).
pub const MAX_JOIN_TOKEN_TTL_S: u32 = 7 * 24 * 3600;

/// Body of `POST /api/v1/hosts/{host}/degrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostDegrade {
    /// Why (shown in the host's health reasons), up to 1024 bytes without
    /// control characters.
    #[serde(default)]
    pub reason: Option<String>,
}

impl Validate for HostDegrade {
    fn validate(&self) -> Result<(), ApiError> {
        match &self.reason {
            Some(r) => crate::validate::check_description("reason", r),
            None => Ok(()),
        }
    }
}

/// Body of `POST /api/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterCreate {
    /// Most hosts in the cluster, 1..=7 (7 when absent).
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_CLUSTER_MEMBERS))]
    pub max_members: Option<u32>,
}

/// Body of `POST /api/v1/cluster/join-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenCreate {
    /// Lifetime, seconds, 1..=604800 (1 hour when absent).
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_JOIN_TOKEN_TTL_S))]
    pub ttl_s: Option<u32>,
}

impl Validate for ClusterCreate {
    fn validate(&self) -> Result<(), ApiError> {
        match self.max_members {
            Some(n) if !(1..=MAX_CLUSTER_MEMBERS).contains(&n) => Err(ApiError::field(
                "max_members",
                format!("must be 1 to {MAX_CLUSTER_MEMBERS}, got {n}"),
            )),
            _ => Ok(()),
        }
    }
}

impl Validate for JoinTokenCreate {
    fn validate(&self) -> Result<(), ApiError> {
        match self.ttl_s {
            Some(t) if !(1..=MAX_JOIN_TOKEN_TTL_S).contains(&t) => Err(ApiError::field(
                "ttl_s",
                format!("must be 1 to {MAX_JOIN_TOKEN_TTL_S} seconds, got {t}"),
            )),
            _ => Ok(()),
        }
    }
}
