//! `nasvisor completion SHELL` and `nasvisor man [--dir DIR]`: shell
//! completions and manual pages, generated from the command definitions.
//! They work offline: no endpoint, token or config file is read.

use crate::api::client::{CliError, CliResult};
use clap_complete::Shell;
use std::io::Write;
use std::path::Path;

/// The completion script of `cmd` for `shell`.
pub fn completion(mut cmd: clap::Command, shell: Shell) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// The manual page of `cmd` itself (section 1).
pub fn man_page(cmd: clap::Command) -> CliResult<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .map_err(|e| CliError::msg(format!("rendering the manual page: {e}")))?;
    Ok(page)
}

/// Writes a page for `cmd` and one for each of its (sub)commands into
/// `dir` (created if missing): `nasvisor.1`, `nasvisor-vm.1`,
/// `nasvisor-vm-create.1`...
pub fn man_pages(cmd: clap::Command, dir: &Path) -> CliResult<()> {
    let failed = |e: std::io::Error| CliError::msg(format!("--dir {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(cmd, dir).map_err(failed)
}

/// Writes `bytes` to stdout; a closed pipe is an error, not a panic.
pub fn print(bytes: &[u8]) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::msg(format!("writing to standard output: {e}")))
}
