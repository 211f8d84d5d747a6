//! The allocator settings of `.cargo/config.toml` are compiled into the binary: the operator's
//! memory figures in docs/operator.md were measured with them, and a build without them (a
//! checkout or image build that lost the file) would hold about a fifth more.

use std::process::Command;

/// jemalloc prints its compiled-in settings (`config.malloc_conf`) and the ones in effect
/// (`opt.*`) when asked through its run-time environment variable.
fn jemalloc_stats() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_baas"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("baas runs");
    assert!(out.status.success(), "baas --version failed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_binary_uses_one_arena_and_returns_freed_pages_within_a_second() {
    let stats = jemalloc_stats();
    assert!(
        stats.contains(r#"config.malloc_conf: "narenas:1,dirty_decay_ms:1000""#),
        "compiled-in jemalloc settings missing; jemalloc said:\n{stats}"
    );
    assert!(stats.contains("opt.narenas: 1\n"), "{stats}");
    assert!(stats.contains("opt.dirty_decay_ms: 1000 "), "{stats}");
}
