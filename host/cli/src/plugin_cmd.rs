//! `nasvisor plugin ...`: keygen, build, sign, verify, inspect, run, replay.

use crate::plugin_build;
use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use nasvisor_plugin_host::journal::{read_journal, replay};
use nasvisor_plugin_host::package::{self, Package};
use nasvisor_plugin_host::validate::validate;
use nasvisor_plugin_host::{
    answer_json, invoke_judging_the_plugin, DecisionInput, LoadedPlugin, Runtime, RuntimeConfig,
};
use nasvisor_plugin_sdk::World;
use nasvisor_signing::{
    generate_key, key_id, read_public_key, read_public_keys_in, read_signing_key, write_keypair,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// The plugins of every host and their state: active, quarantined or
    /// fallback (built-in default), faults in a row, counts, last failure
    /// (asks the API).
    List,
    /// A host's last policy decisions, oldest first: world, function,
    /// plugin, outcome (plugin, native, fallback, refused, quarantined),
    /// cause and duration (asks the API; the inputs and answers are in that
    /// host's journal, for `plugin replay`).
    Decisions {
        /// Only this world's (scheduler, ha-policy, sha, os-installer).
        #[arg(long)]
        world: Option<String>,
        /// The host whose decisions (default: the one answering).
        #[arg(long)]
        host: Option<String>,
        /// Most decisions to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Install a signed package on every host of the cluster, replacing its
    /// world's plugin (asks the API).
    Install {
        /// The `.nvplugin` file.
        package: PathBuf,
    },
    /// Remove the cluster's plugin of a world; the built-in default decides
    /// (asks the API).
    Uninstall {
        /// scheduler, ha-policy, sha or os-installer.
        world: String,
    },
    /// Lift the quarantine of a world's plugin on every host (asks the API).
    Reset {
        /// scheduler, ha-policy, sha or os-installer.
        world: String,
    },
    /// Generate an ed25519 signing key: <out>.key (secret, PKCS#8 PEM) and <out>.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build plugin crates into components and packages (signed with --key).
    Build {
        /// Plugin crate directories.
        #[arg(required = true)]
        crates: Vec<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "target/plugins")]
        out_dir: PathBuf,
        /// Signing key (PKCS#8 PEM); unsigned packages when absent.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Package and sign a component.
    Sign {
        /// The component (.wasm) or an existing package to re-sign.
        component: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        world: Option<World>,
        /// Output package path (default: <component stem>.nvplugin beside it).
        /// Long form only: `-o` is the global --output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a package's signature against trusted keys.
    Verify {
        package: PathBuf,
        #[command(flatten)]
        trust: Trust,
    },
    /// Show a package's manifest, signer, imports and exports.
    Inspect { file: PathBuf },
    /// Run one decision through a plugin and print it as JSON.
    Run {
        /// A package, or a bare component with --dev.
        component: PathBuf,
        /// The plugin's world (required for a bare component).
        #[arg(long)]
        world: Option<World>,
        /// Input JSON: {"function": "...", ...} (see docs/plugin-json.md); "-" for stdin.
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        trust: Trust,
        #[command(flatten)]
        limits: Limits,
    },
    /// Replay a decision journal against a plugin build and print the
    /// decisions it answers differently.
    Replay {
        journal: PathBuf,
        /// The plugin build to replay against.
        #[arg(long)]
        plugin: PathBuf,
        #[arg(long)]
        world: Option<World>,
        #[command(flatten)]
        trust: Trust,
        #[command(flatten)]
        limits: Limits,
        /// Exit with status 3 when any decision differs.
        #[arg(long)]
        fail_on_diff: bool,
    },
}

/// Which signers to trust.
#[derive(Debug, Args)]
pub struct Trust {
    /// A trusted public key (SPKI PEM); repeatable.
    #[arg(long = "trusted-key")]
    keys: Vec<PathBuf>,
    /// A directory whose *.pub files are trusted keys.
    #[arg(long, env = "NASVISOR_TRUSTED_KEYS")]
    trusted_dir: Option<PathBuf>,
    /// Developer mode: load unsigned plugins (and warn about untrusted signers).
    #[arg(long)]
    dev: bool,
}

impl Trust {
    fn load(&self) -> Result<Vec<nasvisor_signing::VerifyingKey>> {
        let mut out = Vec::new();
        for k in &self.keys {
            out.push(read_public_key(k)?);
        }
        if let Some(dir) = &self.trusted_dir {
            let keys = read_public_keys_in(dir).context("--trusted-dir")?;
            out.extend(keys.into_iter().map(|t| t.key));
        }
        Ok(out)
    }
}

/// Call limits.
#[derive(Debug, Args)]
pub struct Limits {
    /// Deadline of one call in milliseconds.
    #[arg(long, default_value_t = RuntimeConfig::default().deadline_ms)]
    deadline_ms: u64,
    /// Memory cap of one instance in MiB.
    #[arg(long, default_value_t = RuntimeConfig::default().memory_limit_mib)]
    memory_mib: u64,
    /// A plugin setting, key=value; repeatable.
    #[arg(long = "setting", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("setting {s:?}: expected key=value"))
}

fn runtime(trust: &Trust, limits: &Limits) -> Result<Runtime> {
    let config = RuntimeConfig {
        deadline_ms: limits.deadline_ms,
        memory_limit_mib: limits.memory_mib,
        developer_mode: trust.dev,
        pool_instances: 4,
        ..RuntimeConfig::default()
    };
    Runtime::new(config, trust.load()?).map_err(|e| anyhow!(e))
}

fn load(
    rt: &Runtime,
    path: &Path,
    world: Option<World>,
    settings: Vec<(String, String)>,
) -> Result<LoadedPlugin> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(rt.load(&bytes, world, settings)?)
}

fn read_input(path: &Path) -> Result<DecisionInput> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("input {}: {e}", path.display()))
}

/// Runs a command; errors print as one line on stderr.
pub fn run(cmd: PluginCommand) -> ExitCode {
    match run_inner(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn run_inner(cmd: PluginCommand) -> Result<ExitCode> {
    match cmd {
        PluginCommand::List
        | PluginCommand::Decisions { .. }
        | PluginCommand::Install { .. }
        | PluginCommand::Uninstall { .. }
        | PluginCommand::Reset { .. } => {
            return Err(anyhow!(
                "plugin list|decisions|install|uninstall|reset ask the API (handled in main)"
            ))
        }
        PluginCommand::Keygen { out } => {
            // `--out acme` or `--out acme.key` give acme.key and acme.pub;
            // other dots (`--out rel-1.2`) are kept.
            let base = match out.extension() {
                Some(e) if e == "key" || e == "pub" => out.with_extension(""),
                _ => out.clone(),
            };
            let with = |x: &str| {
                let mut s = base.clone().into_os_string();
                s.push(x);
                PathBuf::from(s)
            };
            let (s, p) = (with(".key"), with(".pub"));
            let key = generate_key();
            write_keypair(&key, &s, &p)
                .with_context(|| format!("writing {} and {}", s.display(), p.display()))?;
            println!("key id {}", key_id(&key.verifying_key()));
            println!("secret key {}", s.display());
            println!("public key {}", p.display());
        }
        PluginCommand::Build {
            crates,
            out_dir,
            key,
        } => {
            for c in crates {
                let (info, pkg) = plugin_build::build(&c, &out_dir, key.as_deref())?;
                println!(
                    "{} {} ({}) -> {}{}",
                    info.name,
                    info.version,
                    info.world,
                    pkg.display(),
                    if key.is_some() {
                        " [signed]"
                    } else {
                        " [unsigned]"
                    }
                );
            }
        }
        PluginCommand::Sign {
            component,
            key,
            name,
            version,
            world,
            out,
        } => {
            let bytes = std::fs::read(&component)
                .with_context(|| format!("reading {}", component.display()))?;
            let (name, version, world, comp) = if package::is_package(&bytes) {
                let p = Package::parse(&bytes)?;
                (
                    name.unwrap_or(p.manifest.name),
                    version.unwrap_or(p.manifest.version),
                    world.unwrap_or(p.manifest.world),
                    p.component,
                )
            } else {
                let stem = component
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                (
                    name.unwrap_or(stem),
                    version.ok_or_else(|| anyhow!("--version is required for a bare component"))?,
                    world.ok_or_else(|| anyhow!("--world is required for a bare component"))?,
                    bytes,
                )
            };
            let key = read_signing_key(&key)?;
            let pkg = Package::build(&name, &version, world, comp, Some(&key));
            let out = out.unwrap_or_else(|| component.with_extension("nvplugin"));
            plugin_build::write_atomic(&out, &pkg.to_bytes())?;
            println!(
                "signed {name} {version} ({world}) with key {} -> {}",
                key_id(&key.verifying_key()),
                out.display()
            );
        }
        PluginCommand::Verify {
            package: path,
            trust,
        } => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let pkg = Package::parse(&bytes)?;
            let signer = pkg.verify(&trust.load()?, trust.dev)?;
            println!(
                "ok: {} {} ({}) signed by {}",
                pkg.manifest.name,
                pkg.manifest.version,
                pkg.manifest.world,
                signer.as_deref().unwrap_or("nobody (developer mode)")
            );
        }
        PluginCommand::Inspect { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (manifest, signer, comp) = if package::is_package(&bytes) {
                let p = Package::parse(&bytes)?;
                let signer = p.signature.as_ref().map(|(k, _)| key_id(k));
                (Some(p.manifest), signer, p.component)
            } else {
                (None, None, bytes)
            };
            let rt = Runtime::new(
                RuntimeConfig {
                    pool_instances: 1,
                    ..Default::default()
                },
                vec![],
            )
            .map_err(|e| anyhow!(e))?;
            let (c, _) = rt.compile(&comp)?;
            let ty = c.component_type();
            let imports: Vec<String> = ty
                .imports(rt.engine())
                .map(|(n, _)| n.to_string())
                .collect();
            let exports: Vec<String> = ty
                .exports(rt.engine())
                .map(|(n, _)| n.to_string())
                .collect();
            let out = serde_json::json!({
                "manifest": manifest,
                "signed-by": signer,
                "component-sha256": nasvisor_signing::sha256_hex(&comp),
                "component-bytes": comp.len(),
                "imports": imports,
                "exports": exports,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        PluginCommand::Run {
            component,
            world,
            input,
            trust,
            limits,
        } => {
            let rt = runtime(&trust, &limits)?;
            let input = read_input(&input)?;
            let world = world.or(Some(input.world()));
            let plugin = load(&rt, &component, world, limits.settings.clone())?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let answer = invoke_judging_the_plugin(&rt, &plugin, &input, now)?;
            if let Ok(o) = &answer {
                validate(&input, o).map_err(|r| anyhow!("invalid output: {r}"))?;
            }
            println!("{}", serde_json::to_string_pretty(&answer_json(&answer))?);
            if answer.is_err() {
                return Ok(ExitCode::from(2));
            }
        }
        PluginCommand::Replay {
            journal,
            plugin,
            world,
            trust,
            limits,
            fail_on_diff,
        } => {
            let rt = runtime(&trust, &limits)?;
            let records = read_journal(&journal).map_err(|e| anyhow!(e))?;
            let plugin = load(&rt, &plugin, world, limits.settings.clone())?;
            let report = replay(&rt, &plugin, &records);
            for d in &report.differing {
                println!("{}", serde_json::to_string(d)?);
            }
            eprintln!(
                "replayed {} decisions of {} ({} of other worlds skipped): {} same, {} differ",
                report.replayed,
                plugin.label(),
                report.skipped_other_worlds,
                report.same,
                report.differing.len()
            );
            if fail_on_diff && !report.differing.is_empty() {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
