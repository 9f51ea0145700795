//! `nasvisor completion` and `nasvisor man`: the real binary, offline (no
//! endpoint, token, data directory or config file; HOME empty).

use std::path::Path;
use std::process::{Command, Output};

/// `nasvisor ARGS` with nothing to reach a server with.
fn offline(home: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_nasvisor"))
        .env_clear()
        .env("HOME", home)
        .env("NASVISOR_ENDPOINT", "https://192.0.2.1:1")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nasvisor {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn completions_know_the_subcommands_for_every_shell() {
    let home = tempfile::tempdir().unwrap();
    let bash = String::from_utf8(offline(home.path(), &["completion", "bash"]).stdout).unwrap();
    assert!(bash.contains("complete -F _nasvisor"), "{bash}");
    // vm's subcommands, and the options of vm create.
    assert!(bash.contains("nasvisor__subcmd__vm,create)"), "{bash}");
    assert!(bash.contains("--image"), "{bash}");
    assert!(bash.contains("remote"), "{bash}");
    for (shell, marker) in [
        ("zsh", "#compdef nasvisor"),
        ("fish", "complete -c nasvisor"),
        ("elvish", "nasvisor"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let text = String::from_utf8(offline(home.path(), &["completion", shell]).stdout).unwrap();
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("migrate"), "{shell}");
    }
    // Nothing was written to HOME (no config file appears).
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0);
}

#[test]
fn man_writes_a_page_per_command_or_prints_the_top_one() {
    let home = tempfile::tempdir().unwrap();
    let top = String::from_utf8(offline(home.path(), &["man"]).stdout).unwrap();
    assert!(top.contains(".TH nasvisor 1"), "{top}");
    assert!(top.contains("remote"), "{top}");

    let dir = home.path().join("man/man1");
    offline(home.path(), &["man", "--dir", dir.to_str().unwrap()]);
    for page in [
        "nasvisor.1",
        "nasvisor-vm.1",
        "nasvisor-vm-create.1",
        "nasvisor-remote-add.1",
        "nasvisor-completion.1",
    ] {
        assert!(dir.join(page).is_file(), "{page} missing");
    }
    let create = std::fs::read_to_string(dir.join("nasvisor-vm-create.1")).unwrap();
    assert!(create.contains(".TH nasvisor-vm-create 1"), "{create}");
    assert!(create.contains("\\-\\-image"), "{create}");
    // The hidden compatibility flags stay out of the manual.
    let text = std::fs::read_to_string(dir.join("nasvisor.1")).unwrap();
    assert!(text.contains("\\-\\-output"), "{text}");
    assert!(
        !text.contains("\\-\\-json") && !text.contains("\\-\\-token "),
        "{text}"
    );
}
