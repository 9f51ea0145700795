//! nasvisord starts on its embedded defaults plus directory overrides, loads
//! the signed default plugins (from the compiled-code cache on restart),
//! refuses bad plugins and bad configuration with a clear reason.

use nasvisor_plugin_host::testkit::{plugin_dir, workspace_root};
use std::path::Path;
use std::process::{Command, Output};

fn nasvisord(data: &Path, plugins: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nasvisord"))
        .arg("--data-dir")
        .arg(data)
        .arg("--plugin-dir")
        .arg(plugins)
        .arg("--trusted-keys-dir")
        .arg(workspace_root().join("target/keys"))
        .args(["--check", "--log", "warn"])
        .args(extra)
        .env_remove("NASVISOR_CONFIG")
        .output()
        .expect("nasvisord runs")
}

fn status(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "status is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn loads_the_four_signed_defaults_and_uses_the_cache_on_restart() {
    let data = tempfile::tempdir().unwrap();
    let first = nasvisord(data.path(), &plugin_dir(), &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let s = status(&first);
    let slots = s["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 4);
    for slot in slots {
        assert!(
            slot["plugin"].as_str().unwrap().starts_with("nasvisor-"),
            "{slot}"
        );
        assert!(slot["signer"].is_string(), "{slot}");
    }
    assert!(s["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["load-source"] == "compiled"));
    let second = nasvisord(data.path(), &plugin_dir(), &[]);
    assert!(second.status.success());
    let s = status(&second);
    let loaded = s["loaded"].as_array().unwrap();
    assert_eq!(loaded.len(), 4);
    assert!(loaded.iter().all(|l| l["load-source"] == "cache"), "{s}");
}

#[test]
fn a_tampered_plugin_is_refused_and_its_world_keeps_the_default() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["nasvisor-scheduler", "nasvisor-sha"] {
        let file = format!("{name}.nvplugin");
        std::fs::copy(plugin_dir().join(&file), dir.path().join(&file)).unwrap();
    }
    let p = dir.path().join("nasvisor-sha.nvplugin");
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    let o = nasvisord(data.path(), dir.path(), &[]);
    assert!(!o.status.success(), "a refused plugin fails --check");
    let s = status(&o);
    let refused = s["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{s}");
    assert!(
        refused[0]["error"]
            .as_str()
            .unwrap()
            .contains("bad signature"),
        "{s}"
    );
    let slots = s["slots"].as_array().unwrap();
    assert_eq!(slots[0]["plugin"], "nasvisor-scheduler@0.1.0");
    assert!(
        slots[2]["plugin"].is_null(),
        "sha falls back to the built-in default: {s}"
    );
}

#[test]
fn a_bad_config_names_the_field_and_starts_nothing() {
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("nasvisord.toml");
    std::fs::write(&cfg, "[plugins.runtime]\nmemory-limit-mib = 0\n").unwrap();
    let o = nasvisord(
        &data.path().join("state"),
        &plugin_dir(),
        &["--config", cfg.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("memory-limit-mib"), "{err}");
    assert!(!data.path().join("state").exists(), "nothing was created");
}

#[test]
fn print_config_shows_the_embedded_defaults() {
    let o = Command::new(env!("CARGO_BIN_EXE_nasvisord"))
        .arg("--print-config")
        .env_remove("NASVISOR_CONFIG")
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("deadline-ms = 50"), "{text}");
    assert!(text.contains("memory-limit-mib = 64"), "{text}");
}
