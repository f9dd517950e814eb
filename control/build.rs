//! Builds the XDP program (the `pegasus-dataplane-ebpf` crate) for `bpfel-unknown-none` with
//! the nightly toolchain and leaves the object in `OUT_DIR`, where `src/switch/mod.rs` embeds
//! it. `cargo build` is the only command a user needs; `scripts/setup.sh` installs the
//! toolchain pieces (rust-src, bpf-linker). Set `AYA_BUILD_SKIP=1` to skip (e.g. for docs).
fn main() -> aya_build::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../dataplane-ebpf");
    println!("cargo:rerun-if-changed={root_dir}/bpf-linker-v3.sh");
    println!(
        "cargo:rerun-if-changed={}/../common/src",
        env!("CARGO_MANIFEST_DIR")
    );
    let package = aya_build::Package {
        name: "pegasus-dataplane-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
}
