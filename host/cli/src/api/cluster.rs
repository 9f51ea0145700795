//! `nasvisor cluster`: status, create, join tokens, join, remove.

use super::client::{CliResult, Client};
use super::render::{cell, Out, Render};
use clap::Subcommand;
use nasvisor_api_types::{
    ClusterCreate, ClusterJoin, ClusterView, JoinTokenCreate, JoinTokenView, MemberView,
};

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// The cluster this host belongs to and its members.
    Status,
    /// Turn this host into a cluster with its own CA.
    Create {
        /// Most hosts in the cluster (1-7).
        #[arg(long)]
        max_members: Option<u32>,
    },
    /// A one-time, expiring token for a new host to join.
    JoinToken {
        /// Lifetime in seconds (default 3600).
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Update every host with a signed firmware bundle, one host at a time
    /// while the others serve; `status`, `resume`, `abort`, `wait`.
    Update(super::cluster_update::UpdateArgs),
    /// Remove a host from the cluster (by node id).
    Remove { node: u64 },
    /// Join this host (it must have no VMs) to a cluster: ADDRESS is a
    /// member's cluster endpoint (ip:port), TOKEN from `cluster join-token`
    /// there.
    Join {
        address: String,
        #[arg(value_name = "TOKEN")]
        join_token: String,
    },
}

/// Runs `nasvisor cluster ...`.
pub fn run(c: &Client, cmd: ClusterCmd, out: Out) -> CliResult<()> {
    let cluster: ClusterView = match cmd {
        ClusterCmd::Update(args) => return super::cluster_update::run(c, args, out),
        ClusterCmd::Status => c.get("/api/v1/cluster")?,
        ClusterCmd::Create { max_members } => {
            c.send("POST", "/api/v1/cluster", &ClusterCreate { max_members })?
        }
        ClusterCmd::JoinToken { ttl } => {
            let t: JoinTokenView = c.send(
                "POST",
                "/api/v1/cluster/join-tokens",
                &JoinTokenCreate { ttl_s: ttl },
            )?;
            out.done(&t, |t| cell(&t.token));
            if out.doc().is_none() {
                eprintln!("one-time join token, valid until {}", cell(&t.expires_at));
            }
            return Ok(());
        }
        ClusterCmd::Join {
            address,
            join_token,
        } => c.send(
            "POST",
            "/api/v1/cluster/join",
            &ClusterJoin {
                address,
                token: join_token,
            },
        )?,
        ClusterCmd::Remove { node } => {
            c.call::<()>("DELETE", &format!("/api/v1/cluster/members/{node}"))?;
            out.note(|| format!("node {node} removed from the cluster"));
            return Ok(());
        }
    };
    out.show(&cluster);
    Ok(())
}

impl Render for MemberView {
    const COLUMNS: &'static [&'static str] = &["node", "address", "status", "voter"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.node_id),
            cell(&self.addr),
            cell(&self.status),
            cell(&self.voter),
        ]
    }
}

impl Render for ClusterView {
    const COLUMNS: &'static [&'static str] = &["cluster", "this_node", "leader", "members"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.cluster_id),
            cell(&self.this_node),
            cell(&self.leader),
            self.members.len().to_string(),
        ]
    }

    /// The cluster and a table of its members, or that there is none.
    fn show(&self) -> String {
        if !self.clustered {
            return format!(
                "not in a cluster (single host; node {}, cluster endpoint {} once created)\n",
                cell(&self.this_node),
                cell(&self.address)
            );
        }
        let mut out = format!(
            "cluster:      {}\nCA:           {}\nthis node:    {}\nleader:       {}\nmax members:  {}\n",
            cell(&self.cluster_id),
            cell(&self.ca_fingerprint),
            cell(&self.this_node),
            cell(&self.leader),
            cell(&self.max_members)
        );
        out.push_str(&super::render::table(&self.members));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasvisor_api_types::MemberStatus;

    #[test]
    fn a_cluster_shows_its_members_and_a_single_host_says_so() {
        let mut v = ClusterView {
            clustered: true,
            cluster_id: Some("c1".into()),
            ca_fingerprint: Some("AA:BB".into()),
            max_members: 5,
            this_node: 1,
            address: "192.0.2.1:8444".into(),
            leader: Some(1),
            members: vec![MemberView {
                node_id: 1,
                addr: "192.0.2.1:8444".into(),
                status: MemberStatus::Member,
                voter: true,
                key: None,
            }],
        };
        assert_eq!(
            v.show(),
            "cluster:      c1\nCA:           AA:BB\nthis node:    1\nleader:       1\nmax members:  5\n\
             NODE  ADDRESS         STATUS  VOTER\n1     192.0.2.1:8444  member  yes\n"
        );
        v.clustered = false;
        v.address = String::new();
        assert_eq!(
            v.show(),
            "not in a cluster (single host; node 1, cluster endpoint - once created)\n"
        );
    }
}
