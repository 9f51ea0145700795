//! Test support: assembles the flat binaries this crate embeds (the probe
//! firmware, the integration tests' boot sector) from their `.S` sources with
//! binutils, so tests can check the embedded bytes match the source.

use std::path::Path;
use std::process::Command;

/// Assembles `src` to a flat binary linked at address 0 (`--32` with
/// `bits32`, else `--64`). `None` when binutils (as, ld, objcopy) are not
/// installed; panics when assembling fails.
pub fn assemble_flat(src: &Path, bits32: bool) -> Option<Vec<u8>> {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !(have("as") && have("ld") && have("objcopy")) {
        eprintln!("skipping: binutils (as, ld, objcopy) not installed");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let o = dir.path().join("a.o");
    let elf = dir.path().join("a.elf");
    let bin = dir.path().join("a.bin");
    let run = |cmd: &mut Command| assert!(cmd.status().expect("runs").success(), "{cmd:?}");
    run(Command::new("as")
        .arg(if bits32 { "--32" } else { "--64" })
        .arg("-o")
        .arg(&o)
        .arg(src));
    let mut ld = Command::new("ld");
    if bits32 {
        ld.args(["-m", "elf_i386"]);
    }
    run(ld.args(["-e", "0", "-Ttext=0", "-o"]).arg(&elf).arg(&o));
    run(Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&bin));
    Some(std::fs::read(bin).expect("assembled binary"))
}
