//! Builds the sandbox's init program (`init/main.rs`) with the same compiler, as a small,
//! statically linked executable that `src/lib.rs` embeds (`INIT_PROGRAM`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=init/main.rs");
    println!("cargo:rerun-if-changed=src/paths.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let status = Command::new(rustc)
        .args(["--edition", "2024", "--crate-name", "quarters_init", "--crate-type", "bin", "--target", &target])
        .args(["-C", "opt-level=2", "-C", "panic=abort", "-C", "codegen-units=1", "-C", "strip=symbols"])
        .args(["-C", "target-feature=+crt-static"])
        .arg("-o")
        .arg(out.join("quarters-init"))
        .arg("init/main.rs")
        .status()
        .expect("running rustc for the init program");
    assert!(status.success(), "building the sandbox init program (init/main.rs) failed");
}
