//! The binary's start-up footprint, as linked: the agent's idle memory goal (10 MiB) depends
//! on the dynamic loader not mapping libm (see `src/mathfns.rs`) and on relative
//! relocations being packed (DT_RELR, `.cargo/config.toml`). The figures themselves are
//! measured by `cargo bench --bench agent`; this checks the link that produces them.

use std::process::Command;

fn dynamic_section() -> String {
    let out = Command::new("readelf")
        .args(["--dynamic", "--wide"])
        .arg(env!("CARGO_BIN_EXE_csm-agent"))
        .output()
        .expect("readelf (binutils, which the Rust toolchain's linker needs) runs");
    assert!(out.status.success(), "readelf failed: {out:?}");
    String::from_utf8(out.stdout).expect("readelf prints text")
}

#[test]
fn the_binary_does_not_load_libm() {
    let dynamic = dynamic_section();
    let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(
        needed.iter().any(|l| l.contains("libc.so")),
        "the parse found the needed libraries: {dynamic}"
    );
    assert!(
        !needed.iter().any(|l| l.contains("libm.so")),
        "libm is needed again; a new import of a libm function? {needed:#?}"
    );
}

#[test]
fn relative_relocations_are_packed() {
    let dynamic = dynamic_section();
    assert!(
        dynamic.lines().any(|l| l.contains("(RELR)")),
        "no DT_RELR entry: {dynamic}"
    );
}
