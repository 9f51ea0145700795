//! Copying an image of the library from a host that has it to the host
//! that needs it (an install placed where the image has no copy yet).
//!
//! The holder serves its file read-only over NBD with TLS (`qemu-nbd`, on
//! its cluster address, the cluster's certificates, for the duration of the
//! copy); the receiver pulls it
//! with `qemu-img convert` into a temporary file and adds that to its
//! library, which checks it like any other import. The image record then
//! lists the receiver among the hosts with a copy.

use crate::errors;
use crate::jobs::{JobCtx, JobFailure};
use crate::migrate::{free_port, stop_child, wait_listening};
use crate::model::{kind, HostRecord, ImageRecord};
use crate::{lock, Inner};
use nasvisor_api_types::peer::{ImageExport, ImageExportEnd, ImageExportReply};
use nasvisor_api_types::CoreError;
use nasvisor_storage::ImageSpec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Images this host serves to others right now, by export id.
#[derive(Default)]
pub(crate) struct ImageExports {
    servers: Mutex<HashMap<String, tokio::process::Child>>,
}

const EXPORT_TIMEOUT: Duration = Duration::from_secs(60);

impl Inner {
    /// Makes sure image `name` is in this host's library, copying it from a
    /// host that has it when not.
    pub(crate) async fn ensure_image_here(
        self: &Arc<Self>,
        name: &str,
        ctx: &JobCtx,
    ) -> Result<(), JobFailure> {
        if self.library.get(name).is_ok() {
            return Ok(());
        }
        let (rec, _) = self
            .db
            .get::<ImageRecord>(kind::IMAGE, name)
            .ok_or_else(|| {
                JobFailure::Failed(format!("image {name} is no longer in the library"))
            })?;
        let holders: Vec<HostRecord> = rec
            .hosts
            .iter()
            .filter(|h| **h != self.host.id)
            .filter_map(|h| self.db.get::<HostRecord>(kind::HOST, h).map(|(r, _)| r))
            .filter(|h| h.online)
            .collect();
        let mut last = format!("no online host has a copy of image {name}");
        for h in holders {
            ctx.progress(
                0.01,
                Some(&format!("copying image {name} from host {}", h.id)),
            );
            match self.copy_image_from(&h, &rec, ctx).await {
                Ok(()) => return Ok(()),
                Err(JobFailure::Cancelled) => return Err(JobFailure::Cancelled),
                Err(JobFailure::Failed(e)) => {
                    tracing::warn!(image = name, from = %h.id, error = %e, "copying an image failed");
                    last = e;
                }
            }
        }
        Err(JobFailure::Failed(last))
    }

    async fn copy_image_from(
        self: &Arc<Self>,
        holder: &HostRecord,
        rec: &ImageRecord,
        ctx: &JobCtx,
    ) -> Result<(), JobFailure> {
        let fail = |e: CoreError| JobFailure::Failed(e.to_string());
        let export = ImageExport {
            name: rec.name.clone(),
        };
        let v = self
            .call_peer(holder, export, EXPORT_TIMEOUT)
            .await
            .map_err(fail)?;
        let fmt = if v.format == "iso" { "raw" } else { "qcow2" };
        let tmp = self
            .cfg
            .run_dir()
            .join(format!("image-{}.{}.tmp", rec.name, std::process::id()));
        let r = self
            .pull_export(holder, &v.host, v.port, &rec.name, fmt, &tmp, &ctx.cancel)
            .await;
        let end = ImageExportEnd { id: v.id.clone() };
        if let Err(e) = self.call_peer(holder, end, EXPORT_TIMEOUT).await {
            tracing::warn!(image = %rec.name, host = %holder.id, error = %e, "the holder did not stop serving the image; it stops when it restarts");
        }
        if let Err(e) = r {
            nasvisor_best_effort::remove_file(&tmp);
            return Err(e);
        }
        let spec = ImageSpec {
            os_family: rec.os_family.clone(),
            os_variant: rec.os_variant.clone(),
            cloud_init: rec.cloud_init,
            firmware: rec.firmware.as_str().to_string(),
            ready_marker: rec.ready_marker.clone(),
        };
        let (lib, name, path) = (self.library.clone(), rec.name.clone(), tmp.clone());
        let added =
            tokio::task::spawn_blocking(move || lib.add_file(&name, &path, spec, |_, _| {}))
                .await
                .map_err(|e| JobFailure::Failed(e.to_string()))?;
        nasvisor_best_effort::remove_file(&tmp);
        let img = added.map_err(|e| JobFailure::Failed(format!("the copied image: {e}")))?;
        self.image_done(&rec.name, &Ok(img)).await;
        tracing::info!(image = %rec.name, from = %holder.id, "image copied to this host");
        Ok(())
    }

    /// Copies export `export` of `holder`'s NBD server at `host:port` (over
    /// the cluster's TLS) into file `dest`, written as `fmt`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn pull_export(
        &self,
        holder: &HostRecord,
        host: &str,
        port: u16,
        export: &str,
        fmt: &str,
        dest: &std::path::Path,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), JobFailure> {
        let tls = self
            .tls_client("file.", holder.node_id)
            .map_err(|e| JobFailure::Failed(e.to_string()))?;
        // The export shows the guest-visible contents (raw), over TLS.
        let source = format!(
            "driver=raw,file.driver=nbd,file.server.type=inet,file.server.host={host},file.server.port={port},file.export={export}{}",
            tls.opts
        );
        let mut args: Vec<String> = vec!["convert".into()];
        args.extend(tls.args);
        args.extend([
            "--image-opts".into(),
            source,
            "-O".into(),
            fmt.into(),
            dest.to_string_lossy().into_owned(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::migrate::run_qemu_img(cancel, &args).await
    }

    /// `image-export` on the holder: serves image `name` read-only over NBD
    /// to host `from`, the caller, until `image-export-end`.
    pub(crate) async fn export_image(
        &self,
        from: u64,
        name: &str,
    ) -> Result<ImageExportReply, CoreError> {
        let img = self
            .library
            .get(name)
            .map_err(|e| errors::storage("name", e))?;
        let fmt = if img.format == "iso" { "raw" } else { "qcow2" };
        let (id, host, port) = self.serve_file(from, &img.path, fmt, name).await?;
        Ok(ImageExportReply {
            id,
            host,
            port,
            format: img.format.to_string(),
        })
    }

    /// Serves file `path` (format `fmt`) read-only over NBD with TLS, as
    /// export `name`, to host `from` until `image-export-end` of the id
    /// returned (with the server's address and port).
    pub(crate) async fn serve_file(
        &self,
        from: u64,
        path: &std::path::Path,
        fmt: &str,
        name: &str,
    ) -> Result<(String, String, u16), CoreError> {
        let ip = crate::parse_listen(&self.cfg.cluster_address)?
            .ip()
            .to_string();
        let port = free_port(&ip)?;
        let tls = self.tls_server_args(from)?;
        let mut child = tokio::process::Command::new("qemu-nbd")
            .args(&tls)
            .args([
                "--read-only",
                "--persistent",
                "--shared=4",
                "-f",
                fmt,
                "-b",
                &ip,
            ])
            .args(["-p", &port.to_string(), "-x", name])
            .arg(path)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| errors::internal(format!("qemu-nbd does not start: {e}")))?;
        let up = wait_listening(&mut child, &ip, port).await;
        let id = format!("{name}-{port}");
        if let Err(e) = up {
            stop_child(&mut child).await;
            return Err(e);
        }
        lock(&self.image_exports.servers).insert(id.clone(), child);
        Ok((id, ip, port))
    }

    /// `image-export-end`: stops serving export `id` (nothing when it is
    /// not served).
    pub(crate) async fn end_image_export(&self, id: &str) {
        let child = lock(&self.image_exports.servers).remove(id);
        if let Some(mut c) = child {
            stop_child(&mut c).await;
        }
    }
}
