//! Typed QMP for block nodes, block jobs and the NBD server: what a disk
//! mirror to another host is built from (`blockdev-add` of an NBD client,
//! `blockdev-mirror`, `query-block-jobs`, `block-job-cancel`, the target's
//! `nbd-server-start` and `block-export-add`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{QmpClient, QmpError};

/// A TCP address as QEMU's `InetSocketAddress` (the port is a string there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InetAddr {
    pub host: String,
    #[serde(with = "port_string")]
    pub port: u16,
}

impl InetAddr {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        InetAddr {
            host: host.into(),
            port,
        }
    }
}

impl std::fmt::Display for InetAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

mod port_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(port: &u16, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&port.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// QEMU's `SocketAddress` (the flat form of `blockdev-add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SocketAddress {
    Inet(InetAddr),
    /// A socket handed over with `getfd` under this name (QEMU takes it
    /// when the node opens).
    Fd {
        #[serde(rename = "str")]
        name: String,
    },
}

/// TLS of a client stream: credentials object and the name the server's
/// certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClient {
    /// The id of a `tls-creds-x509` object (endpoint `client`).
    pub creds: String,
    pub hostname: String,
}

/// TLS of a server: credentials object and the `authz` object that admits
/// the one client certificate expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServer {
    /// The id of a `tls-creds-x509` object (endpoint `server`).
    pub creds: String,
    /// The id of an `authz-simple` object.
    pub authz: String,
}

/// An NBD client node (`driver: nbd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NbdNode {
    pub node_name: String,
    pub server: SocketAddress,
    pub export: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_creds: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_hostname: Option<String>,
}

impl NbdNode {
    /// The node `node_name` reading and writing export `export` at `addr`,
    /// over TLS when `tls` is given.
    pub fn new(node_name: &str, addr: InetAddr, export: &str, tls: Option<&TlsClient>) -> Self {
        Self::at(node_name, SocketAddress::Inet(addr), export, tls)
    }

    /// As [`Self::new`], with the server at any socket address (a socket
    /// handed over with `getfd`, say).
    pub fn at(
        node_name: &str,
        server: SocketAddress,
        export: &str,
        tls: Option<&TlsClient>,
    ) -> Self {
        NbdNode {
            node_name: node_name.to_string(),
            server,
            export: export.to_string(),
            tls_creds: tls.map(|t| t.creds.clone()),
            tls_hostname: tls.map(|t| t.hostname.clone()),
        }
    }
}

/// A null node: reads zeroes, drops writes (`driver: null-co`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NullNode {
    pub node_name: String,
    pub size: u64,
}

/// A qcow2 image node over a file (`driver: qcow2`, its `file` a
/// `driver: file` child).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Qcow2Node {
    pub node_name: String,
    pub file: FileChild,
    /// Discards reach the file.
    pub discard: &'static str,
}

impl Qcow2Node {
    /// The qcow2 image at `filename` as node `node_name`.
    pub fn new(node_name: &str, filename: &str) -> Self {
        Qcow2Node {
            node_name: node_name.to_string(),
            file: FileChild::File {
                filename: filename.to_string(),
            },
            discard: "unmap",
        }
    }
}

/// The protocol child of an image node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "driver", rename_all = "kebab-case")]
pub enum FileChild {
    File { filename: String },
}

/// The `BlockdevOptions` of the nodes nasvisor adds at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "driver", rename_all = "kebab-case")]
pub enum BlockdevOptions {
    /// A file as it is (`driver: file`).
    File(FileNode),
    Nbd(NbdNode),
    NullCo(NullNode),
    Qcow2(Qcow2Node),
}

/// A file node (`driver: file`): the bytes of `filename` as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileNode {
    pub node_name: String,
    pub filename: String,
}

/// `sync` of a mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MirrorSync {
    /// Copy the whole disk.
    Full,
    /// Copy only what the top layer holds.
    Top,
    /// Copy nothing but new writes.
    None,
}

/// `copy-mode` of a mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MirrorCopyMode {
    /// Guest writes complete at once; the job copies them later.
    Background,
    /// Guest writes complete once they reached the target as well.
    WriteBlocking,
}

/// Arguments of `blockdev-mirror`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockdevMirror {
    pub job_id: String,
    /// The node mirrored (the guest's disk).
    pub device: String,
    /// The node written to.
    pub target: String,
    pub sync: MirrorSync,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_mode: Option<MirrorCopyMode>,
    /// What the job does when writing to the target fails (`None`:
    /// QEMU's default, `report`: the job ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_target_error: Option<BlockdevOnError>,
}

/// QEMU's `BlockdevOnError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockdevOnError {
    Report,
    Ignore,
    Enospc,
    Stop,
    Auto,
}

impl BlockdevMirror {
    /// A full mirror of `device` onto `target`, as job `job_id`.
    pub fn full(job_id: &str, device: &str, target: &str) -> Self {
        BlockdevMirror {
            job_id: job_id.to_string(),
            device: device.to_string(),
            target: target.to_string(),
            sync: MirrorSync::Full,
            copy_mode: None,
            on_target_error: None,
        }
    }
}

/// QEMU's `JobStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    Undefined,
    Created,
    Running,
    Paused,
    Ready,
    Standby,
    Waiting,
    Pending,
    Aborting,
    Concluded,
    Null,
    /// A status this library does not know.
    #[serde(other)]
    Unknown,
}

impl JobStatus {
    /// The job does no more work: it ended, or is ending.
    pub fn is_ending(self) -> bool {
        matches!(
            self,
            JobStatus::Aborting | JobStatus::Concluded | JobStatus::Null
        )
    }
}

/// One entry of `query-block-jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockJobInfo {
    /// The job's id (`device` for historical reasons).
    pub device: String,
    #[serde(rename = "type")]
    pub job_type: String,
    #[serde(default)]
    pub len: u64,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub busy: bool,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub ready: bool,
    pub status: JobStatus,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `query-named-block-nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NamedBlockNode {
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub drv: String,
    /// The node's dirty bitmaps.
    #[serde(default)]
    pub dirty_bitmaps: Vec<DirtyBitmapInfo>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One dirty bitmap of a node (`query-named-block-nodes`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DirtyBitmapInfo {
    #[serde(default)]
    pub name: String,
    /// Bytes marked dirty.
    pub count: u64,
    pub granularity: u64,
    #[serde(default)]
    pub recording: bool,
    #[serde(default)]
    pub busy: bool,
}

/// Arguments of `blockdev-backup` with `sync: bitmap`: copies the areas a
/// dirty bitmap of `device` marks onto `target`, as they are when the job
/// starts. With `bitmap-mode: on-success`, the bitmap afterwards marks
/// only what was written during the job (on failure, all it marked and
/// what was written since).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockdevBitmapBackup {
    pub job_id: String,
    pub device: String,
    pub target: String,
    /// Always `bitmap`.
    sync: &'static str,
    pub bitmap: String,
    /// Always `on-success`.
    bitmap_mode: &'static str,
    /// Always false: the ended job stays listed (with its error) until
    /// `job-dismiss`, so its outcome cannot be missed.
    auto_dismiss: bool,
}

impl BlockdevBitmapBackup {
    /// Copies what bitmap `bitmap` of `device` marks onto `target`.
    pub fn new(job_id: &str, device: &str, target: &str, bitmap: &str) -> Self {
        BlockdevBitmapBackup {
            job_id: job_id.to_string(),
            device: device.to_string(),
            target: target.to_string(),
            sync: "bitmap",
            bitmap: bitmap.to_string(),
            bitmap_mode: "on-success",
            auto_dismiss: false,
        }
    }
}

/// The answer of `x-debug-query-block-graph` (what is read of it).
#[derive(Debug, Clone, Deserialize)]
struct BlockGraph {
    nodes: Vec<BlockGraphNode>,
    edges: Vec<BlockGraphEdge>,
}

#[derive(Debug, Clone, Deserialize)]
struct BlockGraphNode {
    id: u64,
    /// The node name (a device's id for a block backend).
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct BlockGraphEdge {
    parent: u64,
    child: u64,
    /// The child's role, e.g. `children.1` of a quorum.
    name: String,
}

/// An NBD export of a node (`block-export-add`, `type: nbd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NbdExport {
    pub id: String,
    pub node_name: String,
    /// The export name clients ask for.
    pub name: String,
    pub writable: bool,
}

impl QmpClient {
    /// `blockdev-add` of a node.
    pub async fn blockdev_add(&self, options: &BlockdevOptions) -> Result<(), QmpError> {
        let args = self.to_args("blockdev-add", options)?;
        self.execute("blockdev-add", Some(args)).await.map(drop)
    }

    /// `blockdev-del`: remove a node added with `blockdev-add`.
    pub async fn blockdev_del(&self, node_name: &str) -> Result<(), QmpError> {
        self.execute("blockdev-del", Some(json!({ "node-name": node_name })))
            .await
            .map(drop)
    }

    /// `blockdev-mirror`: mirror a node onto another as a job.
    pub async fn blockdev_mirror(&self, mirror: &BlockdevMirror) -> Result<(), QmpError> {
        let args = self.to_args("blockdev-mirror", mirror)?;
        self.execute("blockdev-mirror", Some(args)).await.map(drop)
    }

    /// `blockdev-backup` of what a dirty bitmap marks, as a job.
    pub async fn blockdev_bitmap_backup(
        &self,
        backup: &BlockdevBitmapBackup,
    ) -> Result<(), QmpError> {
        let args = self.to_args("blockdev-backup", backup)?;
        self.execute("blockdev-backup", Some(args)).await.map(drop)
    }

    /// `job-dismiss`: forget a concluded job.
    pub async fn job_dismiss(&self, id: &str) -> Result<(), QmpError> {
        self.execute("job-dismiss", Some(json!({ "id": id })))
            .await
            .map(drop)
    }

    /// `block-dirty-bitmap-add`: a bitmap on `node` (held in QEMU's memory)
    /// that marks, from now on, every area written through it.
    pub async fn block_dirty_bitmap_add(
        &self,
        node: &str,
        name: &str,
        granularity: u64,
    ) -> Result<(), QmpError> {
        self.execute(
            "block-dirty-bitmap-add",
            Some(json!({ "node": node, "name": name, "granularity": granularity })),
        )
        .await
        .map(drop)
    }

    /// `block-dirty-bitmap-remove`.
    pub async fn block_dirty_bitmap_remove(&self, node: &str, name: &str) -> Result<(), QmpError> {
        self.execute(
            "block-dirty-bitmap-remove",
            Some(json!({ "node": node, "name": name })),
        )
        .await
        .map(drop)
    }

    /// Bitmap `name` of `node`, if it has one.
    pub async fn dirty_bitmap(
        &self,
        node: &str,
        name: &str,
    ) -> Result<Option<DirtyBitmapInfo>, QmpError> {
        Ok(self
            .query_named_block_nodes()
            .await?
            .into_iter()
            .find(|n| n.node_name == node)
            .and_then(|n| n.dirty_bitmaps.into_iter().find(|b| b.name == name)))
    }

    /// `query-block-jobs`: the block jobs that exist.
    pub async fn query_block_jobs(&self) -> Result<Vec<BlockJobInfo>, QmpError> {
        self.execute_as("query-block-jobs", None).await
    }

    /// `query-named-block-nodes` (flat): every node.
    pub async fn query_named_block_nodes(&self) -> Result<Vec<NamedBlockNode>, QmpError> {
        self.execute_as("query-named-block-nodes", Some(json!({ "flat": true })))
            .await
    }

    /// `x-blockdev-change` adding `node` as a new child of the quorum node
    /// `parent` (experimental in QEMU, stable since 2.7; used by COLO).
    pub async fn quorum_add_child(&self, parent: &str, node: &str) -> Result<(), QmpError> {
        self.execute(
            "x-blockdev-change",
            Some(json!({ "parent": parent, "node": node })),
        )
        .await
        .map(drop)
    }

    /// `x-blockdev-change` removing child edge `child` (`children.<n>`) of
    /// the quorum node `parent`. QEMU refuses to go below the vote
    /// threshold, so a child is replaced by adding its successor first.
    pub async fn quorum_remove_child(&self, parent: &str, child: &str) -> Result<(), QmpError> {
        self.execute(
            "x-blockdev-change",
            Some(json!({ "parent": parent, "child": child })),
        )
        .await
        .map(drop)
    }

    /// The children of node `parent`: (edge name, child node name), from
    /// `x-debug-query-block-graph` (the one command that names the edges).
    pub async fn node_children(&self, parent: &str) -> Result<Vec<(String, String)>, QmpError> {
        let graph: BlockGraph = self.execute_as("x-debug-query-block-graph", None).await?;
        let id_of = |name: &str| graph.nodes.iter().find(|n| n.name == name).map(|n| n.id);
        let Some(pid) = id_of(parent) else {
            return Ok(Vec::new());
        };
        Ok(graph
            .edges
            .iter()
            .filter(|e| e.parent == pid)
            .filter_map(|e| {
                let child = graph.nodes.iter().find(|n| n.id == e.child)?;
                Some((e.name.clone(), child.name.clone()))
            })
            .collect())
    }

    /// `block-job-cancel`. For a ready mirror, a non-forced cancel completes it
    /// without pivoting.
    pub async fn block_job_cancel(&self, device: &str, force: bool) -> Result<(), QmpError> {
        self.execute(
            "block-job-cancel",
            Some(json!({ "device": device, "force": force })),
        )
        .await
        .map(drop)
    }

    /// `block-job-complete`: pivot a ready mirror onto its target.
    pub async fn block_job_complete(&self, device: &str) -> Result<(), QmpError> {
        self.execute("block-job-complete", Some(json!({ "device": device })))
            .await
            .map(drop)
    }

    /// `nbd-server-start` on `addr`, over TLS when `tls` is given.
    pub async fn nbd_server_start(
        &self,
        addr: &InetAddr,
        tls: Option<&TlsServer>,
    ) -> Result<(), QmpError> {
        // The legacy (wrapped) SocketAddress of this command.
        let mut args = json!({ "addr": { "type": "inet", "data": addr } });
        if let Some(t) = tls {
            args["tls-creds"] = json!(t.creds);
            args["tls-authz"] = json!(t.authz);
        }
        self.execute("nbd-server-start", Some(args)).await.map(drop)
    }

    /// `nbd-server-stop`.
    pub async fn nbd_server_stop(&self) -> Result<(), QmpError> {
        self.execute("nbd-server-stop", None).await.map(drop)
    }

    /// `block-export-add` of an NBD export.
    pub async fn block_export_add(&self, export: &NbdExport) -> Result<(), QmpError> {
        let mut args = self.to_args("block-export-add", export)?;
        args["type"] = json!("nbd");
        self.execute("block-export-add", Some(args)).await.map(drop)
    }

    /// Arguments of `command` from a typed struct.
    pub(crate) fn to_args<T: Serialize>(&self, command: &str, v: &T) -> Result<Value, QmpError> {
        serde_json::to_value(v).map_err(|source| QmpError::Encode {
            command: command.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nbd_node_over_tls_renders_as_qemu_expects() {
        let tls = TlsClient {
            creds: "c".into(),
            hostname: "node-2".into(),
        };
        let n = BlockdevOptions::Nbd(NbdNode::new(
            "mig-disk0",
            InetAddr::new("10.0.0.2", 4000),
            "disk0",
            Some(&tls),
        ));
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            json!({"driver": "nbd", "node-name": "mig-disk0",
                "server": {"type": "inet", "host": "10.0.0.2", "port": "4000"},
                "export": "disk0", "tls-creds": "c", "tls-hostname": "node-2"})
        );
        let plain = NbdNode::new("n", InetAddr::new("h", 1), "e", None);
        let v = serde_json::to_value(BlockdevOptions::Nbd(plain)).unwrap();
        assert!(v.get("tls-creds").is_none(), "{v}");
    }

    #[test]
    fn block_jobs_decode_with_their_status() {
        let jobs: Vec<BlockJobInfo> = serde_json::from_value(json!([{"device": "mig-disk0",
            "type": "mirror", "len": 10, "offset": 4, "busy": true, "paused": false,
            "ready": false, "status": "running", "speed": 0, "io-status": "ok",
            "auto-finalize": true, "auto-dismiss": true}]))
        .unwrap();
        assert_eq!(jobs[0].status, JobStatus::Running);
        assert_eq!((jobs[0].len, jobs[0].offset), (10, 4));
        let j: BlockJobInfo =
            serde_json::from_value(json!({"device": "x", "type": "t", "status": "brand-new"}))
                .unwrap();
        assert_eq!(j.status, JobStatus::Unknown);
    }

    #[test]
    fn a_mirror_renders_its_sync_and_copy_mode() {
        let mut m = BlockdevMirror::full("j", "disk0", "t");
        m.copy_mode = Some(MirrorCopyMode::WriteBlocking);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"job-id": "j", "device": "disk0", "target": "t", "sync": "full",
                "copy-mode": "write-blocking"})
        );
    }
}
