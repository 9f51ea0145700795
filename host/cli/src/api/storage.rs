//! `nasvisor pool`, `volume` and `snapshot`: the storage of a host (the
//! one the CLI talks to, or the one `--host` names).

use super::client::{enc, CliError, CliResult, Client};
use super::jobs;
use super::render::{cell, Out, Render};
use super::table::mib;
use clap::{Args, Subcommand};
use nasvisor_api_types::{
    JobView, PoolCreate, PoolView, SnapshotCreate, SnapshotView, VolumeClone, VolumeCreate,
    VolumeFormat, VolumeImport, VolumeResize, VolumeView,
};

/// `nasvisor pool`: `--host` names the host whose pools are meant (the host
/// the CLI talks to otherwise); the request is carried out there.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Host whose pools are meant.
    #[arg(long, global = true)]
    host: Option<String>,
    #[command(subcommand)]
    cmd: PoolCmd,
}

/// `nasvisor volume` (`--host` as for `pool`).
#[derive(Debug, Args)]
pub struct VolumeArgs {
    /// Host whose pools are meant.
    #[arg(long, global = true)]
    host: Option<String>,
    #[command(subcommand)]
    cmd: VolumeCmd,
}

/// `nasvisor snapshot` (`--host` as for `pool`).
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Host whose pools are meant.
    #[arg(long, global = true)]
    host: Option<String>,
    #[command(subcommand)]
    cmd: SnapshotCmd,
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// All pools.
    List,
    /// Define a pool over a directory of this host (or, with --shared, one
    /// every host reaches at the same path).
    Create {
        name: String,
        path: String,
        #[arg(long)]
        shared: bool,
    },
    /// Remove a pool definition.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// The volumes of a pool.
    List { pool: String },
    /// Create a volume.
    Create {
        pool: String,
        name: String,
        /// Size, MiB.
        size_mib: u64,
        /// qcow2 (default) or raw.
        #[arg(long, value_parser = ["qcow2", "raw"])]
        format: Option<String>,
    },
    /// Delete a volume.
    Delete { pool: String, volume: String },
    /// Grow a volume.
    Resize {
        pool: String,
        volume: String,
        /// New size, MiB.
        size_mib: u64,
    },
    /// Copy a volume.
    Clone {
        pool: String,
        volume: String,
        new: String,
        /// Linked clone (backed by the source) instead of a full copy.
        #[arg(long)]
        linked: bool,
    },
    /// Import a disk image file of the host (raw, qcow2, vmdk, vdi) as a volume.
    Import {
        pool: String,
        name: String,
        /// Absolute path on the host.
        path: String,
        /// Follow the import job until it ends.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// The snapshots of a volume.
    List { pool: String, volume: String },
    /// Take a snapshot.
    Create {
        pool: String,
        volume: String,
        snapshot: String,
    },
    /// Return the volume to a snapshot.
    Revert {
        pool: String,
        volume: String,
        snapshot: String,
    },
    /// Delete a snapshot.
    Delete {
        pool: String,
        volume: String,
        snapshot: String,
    },
}

/// `?host=` for a storage request on `host` (nothing without one).
fn on_host(host: Option<&str>) -> String {
    host.map(|h| format!("?host={}", enc(h)))
        .unwrap_or_default()
}

fn pool_path(pool: &str) -> String {
    format!("/api/v1/pools/{}", enc(pool))
}

fn vol_path(pool: &str, vol: &str) -> String {
    format!("{}/volumes/{}", pool_path(pool), enc(vol))
}

/// Runs `nasvisor pool ...`.
pub fn run_pool(c: &Client, args: PoolArgs, out: Out) -> CliResult<()> {
    let host = args.host.as_deref();
    let q = on_host(host);
    match args.cmd {
        PoolCmd::List => {
            let mut pools: Vec<PoolView> = c.get(&format!("/api/v1/pools{q}"))?;
            // With --host: that host's pools and the shared ones, measured
            // there.
            if let Some(host) = host {
                pools.retain(|p| p.host.as_deref().is_none_or(|h| h == host));
            }
            out.list(&pools);
        }
        PoolCmd::Create { name, path, shared } => {
            let body = PoolCreate { name, path, shared };
            let p: PoolView = c.send("POST", &format!("/api/v1/pools{q}"), &body)?;
            out.done(&p, |p| {
                format!("pool {} created at {}", cell(&p.name), cell(&p.path))
            });
        }
        PoolCmd::Delete { name } => {
            c.call::<()>("DELETE", &format!("{}{q}", pool_path(&name)))?;
            out.note(|| format!("pool {name} deleted"));
        }
    }
    Ok(())
}

/// One line about a volume: `POOL/NAME (SIZE, FORMAT)`.
fn volume_line(v: &VolumeView) -> String {
    format!(
        "{}/{} ({}, {})",
        cell(&v.pool),
        cell(&v.name),
        mib(v.size_mib),
        cell(&v.format)
    )
}

/// Runs `nasvisor volume ...`.
pub fn run_volume(c: &Client, args: VolumeArgs, out: Out) -> CliResult<()> {
    let q = on_host(args.host.as_deref());
    match args.cmd {
        VolumeCmd::List { pool } => {
            let vols: Vec<VolumeView> = c.get(&format!("{}/volumes{q}", pool_path(&pool)))?;
            out.list(&vols);
        }
        VolumeCmd::Create {
            pool,
            name,
            size_mib,
            format,
        } => {
            let format = format
                .map(|f| {
                    super::api_enum::<VolumeFormat>(&f)
                        .map_err(|e| CliError::msg(format!("--format {f:?}: {e}")))
                })
                .transpose()?;
            let body = VolumeCreate {
                name,
                size_mib,
                format,
            };
            let v: VolumeView =
                c.send("POST", &format!("{}/volumes{q}", pool_path(&pool)), &body)?;
            out.done(&v, |v| format!("volume {} created", volume_line(v)));
        }
        VolumeCmd::Delete { pool, volume } => {
            c.call::<()>("DELETE", &format!("{}{q}", vol_path(&pool, &volume)))?;
            out.note(|| format!("volume {pool}/{volume} deleted"));
        }
        VolumeCmd::Resize {
            pool,
            volume,
            size_mib,
        } => {
            let v: VolumeView = c.send(
                "POST",
                &format!("{}/resize{q}", vol_path(&pool, &volume)),
                &VolumeResize { size_mib },
            )?;
            out.done(&v, |v| format!("volume {} resized", volume_line(v)));
        }
        VolumeCmd::Clone {
            pool,
            volume,
            new,
            linked,
        } => {
            let v: VolumeView = c.send(
                "POST",
                &format!("{}/clone{q}", vol_path(&pool, &volume)),
                &VolumeClone { name: new, linked },
            )?;
            out.done(&v, |v| {
                format!(
                    "volume {} created as a {} clone of {volume}",
                    volume_line(v),
                    if linked { "linked" } else { "full" }
                )
            });
        }
        VolumeCmd::Import {
            pool,
            name,
            path,
            wait,
        } => {
            let j: JobView = c.send(
                "POST",
                &format!("{}/imports{q}", pool_path(&pool)),
                &VolumeImport { name, path },
            )?;
            jobs::answer(c, out, &j, wait)?;
        }
    }
    Ok(())
}

/// Runs `nasvisor snapshot ...`. Taking, reverting to and deleting a
/// snapshot answer with the snapshot, or with nothing.
pub fn run_snapshot(c: &Client, args: SnapshotArgs, out: Out) -> CliResult<()> {
    let q = on_host(args.host.as_deref());
    match args.cmd {
        SnapshotCmd::List { pool, volume } => {
            let snaps: Vec<SnapshotView> =
                c.get(&format!("{}/snapshots{q}", vol_path(&pool, &volume)))?;
            out.list(&snaps);
        }
        SnapshotCmd::Create {
            pool,
            volume,
            snapshot,
        } => {
            let s: Option<SnapshotView> = c.send(
                "POST",
                &format!("{}/snapshots{q}", vol_path(&pool, &volume)),
                &SnapshotCreate {
                    name: snapshot.clone(),
                },
            )?;
            out.done(&s, |_| {
                format!("snapshot {snapshot} of {pool}/{volume} created")
            });
        }
        SnapshotCmd::Revert {
            pool,
            volume,
            snapshot,
        } => {
            let s: Option<SnapshotView> = c.call(
                "POST",
                &format!(
                    "{}/snapshots/{}/revert{q}",
                    vol_path(&pool, &volume),
                    enc(&snapshot)
                ),
            )?;
            out.done(&s, |_| {
                format!("{pool}/{volume} reverted to snapshot {snapshot}")
            });
        }
        SnapshotCmd::Delete {
            pool,
            volume,
            snapshot,
        } => {
            let s: Option<SnapshotView> = c.call(
                "DELETE",
                &format!(
                    "{}/snapshots/{}{q}",
                    vol_path(&pool, &volume),
                    enc(&snapshot)
                ),
            )?;
            out.done(&s, |_| {
                format!("snapshot {snapshot} of {pool}/{volume} deleted")
            });
        }
    }
    Ok(())
}

impl Render for PoolView {
    const COLUMNS: &'static [&'static str] = &["name", "host", "path", "capacity_mib", "free_mib"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.name),
            cell(&self.host),
            cell(&self.path),
            cell(&self.capacity_mib),
            cell(&self.free_mib),
        ]
    }
}

impl Render for VolumeView {
    const COLUMNS: &'static [&'static str] = &["name", "pool", "size_mib", "format", "used_by"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.name),
            cell(&self.pool),
            cell(&self.size_mib),
            cell(&self.format),
            cell(&self.used_by),
        ]
    }
}

impl Render for SnapshotView {
    const COLUMNS: &'static [&'static str] = &["name", "pool", "volume", "created_at"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.name),
            cell(&self.pool),
            cell(&self.volume),
            cell(&self.created_at),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_in_a_line_and_paths_encoded() {
        let v = VolumeView {
            name: "v1".into(),
            pool: "p1".into(),
            size_mib: 2048,
            format: VolumeFormat::Raw,
            used_by: None,
        };
        assert_eq!(volume_line(&v), "p1/v1 (2.0 GiB, raw)");
        assert_eq!(v.row(), ["v1", "p1", "2048", "raw", "-"]);
        assert_eq!(vol_path("p 1", "v/1"), "/api/v1/pools/p%201/volumes/v%2F1");
        assert_eq!(on_host(Some("nas 2")), "?host=nas%202");
        assert_eq!(on_host(None), "");
    }
}
