//! `nasvisor image`: the library of system images (list, add from a host
//! path, a URL or an uploaded file, delete).

use super::client::{enc, query, CliError, CliResult, Client};
use super::jobs;
use super::render::{cell, Out, Render};
use clap::{ArgAction, ArgGroup, Args, Subcommand};
use nasvisor_api_types::{ApiError, FirmwareKind, ImageAddBody, ImageMetaSpec, ImageView, JobView};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// All images.
    List,
    /// Add an image from a host path, a URL or an uploaded file.
    Add(ImageAddArgs),
    /// Delete an image.
    Delete { name: String },
}

/// `nasvisor image add`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["path", "url", "upload"])))]
pub struct ImageAddArgs {
    name: String,
    /// Absolute path of the file on the host.
    #[arg(long)]
    path: Option<String>,
    /// http(s) URL the host downloads (plain http:// only with --sha256).
    #[arg(long)]
    url: Option<String>,
    /// SHA-256 of the file (64 hex digits), checked before the image is
    /// added; required with a plain http:// URL.
    #[arg(long, conflicts_with = "upload")]
    sha256: Option<String>,
    /// A local file to upload (streamed).
    #[arg(long)]
    upload: Option<PathBuf>,
    /// OS family (default linux).
    #[arg(long)]
    os_family: Option<String>,
    /// OS variant, e.g. debian12.
    #[arg(long)]
    os_variant: Option<String>,
    /// Whether the image runs cloud-init: true or false (default true).
    #[arg(long, action = ArgAction::Set)]
    cloud_init: Option<bool>,
    /// bios or uefi (default bios).
    #[arg(long, value_parser = ["bios", "uefi"])]
    firmware: Option<String>,
    /// Console line that means "installed and up".
    #[arg(long)]
    ready_marker: Option<String>,
    /// Follow the import job until it ends.
    #[arg(long)]
    wait: bool,
}

/// Runs `nasvisor image ...`.
pub fn run(c: &Client, cmd: ImageCmd, out: Out) -> CliResult<()> {
    match cmd {
        ImageCmd::List => out.list(&c.get::<Vec<ImageView>>("/api/v1/images")?),
        ImageCmd::Delete { name } => {
            c.call::<()>("DELETE", &format!("/api/v1/images/{}", enc(&name)))?;
            out.note(|| format!("image {name} deleted"));
        }
        ImageCmd::Add(a) => {
            let j = match &a.upload {
                Some(file) => upload(c, &a, file)?,
                None => c.send("POST", "/api/v1/images", &add_body(&a)?)?,
            };
            jobs::answer(c, out, &j, a.wait)?;
        }
    }
    Ok(())
}

fn firmware(a: &ImageAddArgs) -> CliResult<Option<FirmwareKind>> {
    a.firmware
        .as_deref()
        .map(str::parse::<FirmwareKind>)
        .transpose()
        .map_err(CliError::msg)
}

/// The `POST /api/v1/images` body: a host path or a URL, and the metadata.
fn add_body(a: &ImageAddArgs) -> CliResult<ImageAddBody> {
    Ok(ImageAddBody {
        name: a.name.clone(),
        path: a.path.clone(),
        url: a.url.clone(),
        sha256: a.sha256.clone(),
        os_family: a.os_family.clone(),
        os_variant: a.os_variant.clone(),
        cloud_init: a.cloud_init,
        firmware: firmware(a)?,
        ready_marker: a.ready_marker.clone(),
    })
}

/// Streams `file` to the upload route, the metadata in its query. They are
/// checked with the API's own rules before the file is sent: a server that
/// refuses the request early cannot always tell the client why while the
/// client is still sending.
fn upload(c: &Client, a: &ImageAddArgs, file: &std::path::Path) -> CliResult<JobView> {
    let local = |e: ApiError| CliError::Api {
        status: 0,
        field: e.field,
        reason: e.reason,
    };
    nasvisor_api_types::check_name("name", &a.name).map_err(local)?;
    let firmware = firmware(a)?;
    ImageMetaSpec::from_parts(
        a.os_family.clone(),
        a.os_variant.clone(),
        a.cloud_init,
        firmware,
        a.ready_marker.clone(),
    )
    .map_err(local)?;
    // Only what was given: the server applies the defaults.
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(f) = &a.os_family {
        q.push(("os_family", f.clone()));
    }
    if let Some(v) = &a.os_variant {
        q.push(("os_variant", v.clone()));
    }
    if let Some(ci) = a.cloud_init {
        q.push(("cloud_init", ci.to_string()));
    }
    if let Some(f) = firmware {
        q.push(("firmware", f.as_str().to_string()));
    }
    if let Some(m) = &a.ready_marker {
        q.push(("ready_marker", m.clone()));
    }
    super::console::upload(
        c,
        &format!("/api/v1/images/{}/upload{}", enc(&a.name), query(&q)),
        file,
        "--upload",
    )
}

impl Render for ImageView {
    const COLUMNS: &'static [&'static str] = &[
        "name",
        "state",
        "format",
        "size_mib",
        "virtual_mib",
        "os",
        "variant",
        "firmware",
        "cloud_init",
        "hosts",
        "error",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.name),
            cell(&self.state),
            cell(&self.format),
            cell(&self.size_mib),
            cell(&self.virtual_size_mib),
            cell(&self.os_family),
            cell(&self.os_variant),
            cell(&self.firmware),
            cell(&self.cloud_init),
            cell(&self.hosts),
            cell(&self.error),
        ]
    }
}
