//! `nasvisor plugin build`: compile a plugin crate to `wasm32-unknown-unknown`
//! with the wasm-capable compiler (see shared/TOOLCHAIN.md), turn the core
//! module into a component with wit-component, and package it (signed when a
//! key is given).

use anyhow::{anyhow, bail, Context, Result};
use nasvisor_plugin_host::package::{read_signing_key, Package};
use nasvisor_plugin_sdk::World;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the wasm toolchain lives; each can be overridden by environment.
struct Toolchain {
    cargo: PathBuf,
    rustc: PathBuf,
    llvm_bin: PathBuf,
}

impl Toolchain {
    fn from_env() -> Toolchain {
        let var =
            |k: &str, d: &str| PathBuf::from(std::env::var(k).unwrap_or_else(|_| d.to_string()));
        Toolchain {
            cargo: var("NASVISOR_WASM_CARGO", "/usr/bin/cargo"),
            rustc: var("NASVISOR_WASM_RUSTC", "/usr/bin/rustc"),
            llvm_bin: var("NASVISOR_LLVM_BIN", "/usr/lib/llvm-19/bin"),
        }
    }
}

/// What `cargo metadata` says about the plugin crate.
#[derive(Debug)]
pub struct CrateInfo {
    pub name: String,
    pub version: String,
    pub world: World,
    pub manifest_path: PathBuf,
    pub target_dir: PathBuf,
}

fn crate_info(tc: &Toolchain, dir: &Path) -> Result<CrateInfo> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{}: no Cargo.toml (give the plugin crate's directory)",
            dir.display()
        );
    }
    let out = Command::new(&tc.cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .with_context(|| format!("running {} metadata", tc.cargo.display()))?;
    if !out.status.success() {
        bail!(
            "cargo metadata for {} failed: {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let canon = manifest.canonicalize()?;
    let pkg = meta["packages"]
        .as_array()
        .and_then(|ps| {
            ps.iter().find(|p| {
                p["manifest_path"]
                    .as_str()
                    .is_some_and(|m| Path::new(m) == canon)
            })
        })
        .ok_or_else(|| {
            anyhow!(
                "{}: package not found in cargo metadata",
                manifest.display()
            )
        })?;
    let name = pkg["name"].as_str().unwrap_or_default().to_string();
    let world = pkg["metadata"]["nasvisor"]["world"].as_str().ok_or_else(|| {
        anyhow!(
            "{}: [package.metadata.nasvisor] world = \"...\" is missing (scheduler, ha-policy, sha or os-installer)",
            manifest.display()
        )
    })?;
    let world: World = world.parse().map_err(|e: String| {
        anyhow!(
            "{}: package.metadata.nasvisor.world: {e}",
            manifest.display()
        )
    })?;
    Ok(CrateInfo {
        name,
        version: pkg["version"].as_str().unwrap_or_default().to_string(),
        world,
        manifest_path: canon,
        target_dir: PathBuf::from(meta["target_directory"].as_str().unwrap_or("target")),
    })
}

/// Flags of every plugin build (see `compile_module`).
pub const WASM_RUSTFLAGS: [&str; 1] = ["-Ctarget-cpu=mvp"];

/// Compiles the crate to a core wasm module and returns its bytes.
fn compile_module(tc: &Toolchain, info: &CrateInfo) -> Result<Vec<u8>> {
    let target_dir = info.target_dir.join("wasm");
    let path = std::env::var("PATH").unwrap_or_default();
    let mut cmd = Command::new(&tc.cargo);
    cmd.args(["rustc", "--manifest-path"])
        .arg(&info.manifest_path)
        .args([
            "--profile",
            "plugin",
            "--target",
            "wasm32-unknown-unknown",
            "-Zbuild-std=std,panic_abort",
            "--crate-type",
            "cdylib",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The host build's toolchain selection must not leak into this one.
    for v in [
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(v);
    }
    // The host refuses the instructions that no deadline check can
    // interrupt (bulk memory: memory.fill/copy over a whole memory in one
    // instruction; reference types: table.fill/grow), so the plugin and the
    // std it links are built for the WebAssembly MVP feature set. This
    // replaces (it does not add to) any RUSTFLAGS of the caller, removed above.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", WASM_RUSTFLAGS.join("\x1f"));
    cmd.env("RUSTC", &tc.rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld")
        .env("PATH", format!("{}:{path}", tc.llvm_bin.display()));
    let status = cmd
        .status()
        .with_context(|| format!("running {}", tc.cargo.display()))?;
    if !status.success() {
        bail!(
            "building {} for wasm32 failed ({status}); is the wasm toolchain installed? run scripts/setup.sh",
            info.name
        );
    }
    let module = target_dir
        .join("wasm32-unknown-unknown/plugin")
        .join(format!("{}.wasm", info.name.replace('-', "_")));
    std::fs::read(&module).with_context(|| format!("reading {}", module.display()))
}

/// Turns a core module with wit-bindgen's component-type section into a component.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .context("reading the core module")?
        .validate(true)
        .encode()
        .context("encoding the component")
}

/// Builds one plugin crate into `<out>/<name>.wasm` and `<out>/<name>.nvplugin`.
pub fn build(dir: &Path, out: &Path, key: Option<&Path>) -> Result<(CrateInfo, PathBuf)> {
    let tc = Toolchain::from_env();
    let info = crate_info(&tc, dir)?;
    let module = compile_module(&tc, &info)?;
    let component = componentize(&module)?;
    std::fs::create_dir_all(out)?;
    let key = key.map(read_signing_key).transpose()?;
    let pkg = Package::build(
        &info.name,
        &info.version,
        info.world,
        component.clone(),
        key.as_ref(),
    );
    let wasm_path = out.join(format!("{}.wasm", info.name));
    let pkg_path = out.join(format!("{}.nvplugin", info.name));
    write_atomic(&wasm_path, &component)?;
    write_atomic(&pkg_path, &pkg.to_bytes())?;
    Ok((info, pkg_path))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
