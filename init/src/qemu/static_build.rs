//! The servers for the guest, linked statically so the initramfs needs no
//! loader or libraries: glibc's `libc.a` with `-C target-feature=+crt-static`
//! (the musl target would need a rustup download this machine cannot make).
//! Built into their own target dir, stripped, so the normal build is left
//! alone and the initramfs stays small (about 16 MB).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::QemuError;

/// Every executable the guest needs, `svm` (its PID 1) first.
pub const EXECUTABLES: [&str; 5] = ["svm", "xe-model", "xe-svm", "pager", "mm-server"];
/// The packages that hold them.
const PACKAGES: [&str; 5] = ["init", "hw", "xe-svm", "pager", "mm-server"];
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The repository: the first directory, from the current one up, then from
/// this executable's up, that holds `scripts/fetch-qemu.sh`.
pub fn workspace_root() -> Option<PathBuf> {
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    starts
        .into_iter()
        .flatten()
        .flat_map(|s| s.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .find(|d| d.join("scripts/fetch-qemu.sh").is_file() && d.join("Cargo.toml").is_file())
}

/// Builds the executables statically (cargo does nothing when they are
/// current) and returns the directory that holds them.
pub fn build(root: &Path) -> Result<PathBuf, QemuError> {
    let target_dir = root.join("target/static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    rustflags.push_str(" -C target-feature=+crt-static");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--bins", "--target", TARGET])
        .args(PACKAGES.iter().flat_map(|p| ["-p", p]))
        .env("CARGO_TARGET_DIR", &target_dir)
        // With `--target`, RUSTFLAGS reach our code and not build scripts
        // or proc macros (which must stay dynamic).
        .env("RUSTFLAGS", rustflags.trim())
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true");
    eprintln!(
        "svm qemu: building the static servers into {}",
        target_dir.display()
    );
    let status = cmd
        .status()
        .map_err(|e| QemuError::Build(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(QemuError::Build(format!("cargo build: {status}")));
    }
    Ok(target_dir.join(TARGET).join("release"))
}

/// Checks that every executable is in `dir` and statically linked.
pub fn check(dir: &Path) -> Result<Vec<PathBuf>, QemuError> {
    EXECUTABLES
        .iter()
        .map(|name| {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|_| QemuError::MissingBinary(path.clone()))?;
            match needs_loader(&bytes) {
                Some(false) => Ok(path),
                _ => Err(QemuError::NotStatic(path)),
            }
        })
        .collect()
}

const PT_INTERP: u32 = 3;

/// Whether an ELF64 little-endian executable names a program interpreter
/// (a dynamic loader); `None` if it is not such a file. Hand-written: one
/// field of the program headers is all that is read.
pub fn needs_loader(elf: &[u8]) -> Option<bool> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let bytes = |o: usize, n: usize| elf.get(o..o.checked_add(n)?);
    let u16_at = |o| Some(u16::from_le_bytes(bytes(o, 2)?.try_into().ok()?));
    let u32_at = |o| Some(u32::from_le_bytes(bytes(o, 4)?.try_into().ok()?));
    let u64_at = |o| Some(u64::from_le_bytes(bytes(o, 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    if phentsize < 4 {
        return None;
    }
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(at)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_needs_a_loader() {
        // This test binary is linked dynamically like every cargo build here.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(needs_loader(&me), Some(true));
    }

    #[test]
    fn a_static_header_needs_none_and_garbage_is_refused() {
        // A minimal ELF64 header with one PT_LOAD program header.
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(needs_loader(&elf), Some(false));
        elf[64..68].copy_from_slice(&PT_INTERP.to_le_bytes());
        assert_eq!(needs_loader(&elf), Some(true));
        // Program headers past the end, absurd counts, not ELF at all.
        elf[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(needs_loader(&elf), None);
        assert_eq!(needs_loader(b"#!/bin/sh\n"), None);
        assert_eq!(needs_loader(&[]), None);
    }
}
