//! How the two binaries are linked (unprivileged). `dyno-shim` runs once per dyno, so a plain
//! `cargo build` must link it statically (`.cargo/rustc-static-shim` adds `+crt-static` to it
//! alone); `dyno` itself must stay dynamic, because it resolves names through glibc's NSS. A
//! build that bypasses the workspace's `.cargo/config.toml` (run from outside the checkout, or
//! with `RUSTC_WORKSPACE_WRAPPER` set to something else) fails here instead of quietly giving
//! every dyno a bigger shim.

use std::path::Path;

/// `PT_INTERP`: the program header naming the dynamic loader; a static executable (static-pie
/// included) has none.
const PT_INTERP: u32 = 3;

/// Whether the ELF64 little-endian executable at `path` asks for a dynamic loader.
fn has_interpreter(path: &str) -> bool {
    let elf = std::fs::read(Path::new(path)).unwrap_or_else(|e| panic!("read {path}: {e}"));
    assert!(
        elf.len() >= 64 && elf.starts_with(b"\x7fELF\x02\x01"),
        "{path}: not a 64-bit little-endian ELF file"
    );
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

#[test]
fn the_shim_is_linked_statically() {
    assert!(
        !has_interpreter(env!("CARGO_BIN_EXE_dyno-shim")),
        "dyno-shim is linked dynamically: build from the checkout, so that cargo reads \
         .cargo/config.toml (its rustc-workspace-wrapper links the shim statically)"
    );
}

#[test]
fn dyno_itself_stays_dynamic() {
    assert!(
        has_interpreter(env!("CARGO_BIN_EXE_dyno")),
        "dyno is linked statically: +crt-static belongs to dyno-shim alone (glibc's name \
         resolution needs the dynamic loader)"
    );
}
