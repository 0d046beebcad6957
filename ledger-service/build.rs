#![allow(clippy::expect_used, clippy::unwrap_used)] // A build script reports a broken build by panicking.
//! Builds what the web app serves into the binary (nothing is loaded from the internet):
//!
//! - the browser's verifier: `web-verifier` (provenance-core's bundle verification) compiled
//!   to WebAssembly by a nested `cargo build --target wasm32-unknown-unknown --profile wasm`,
//!   in its own target folder beside this build's (so it never waits on the outer build's
//!   lock, and debug, release and clippy builds share it);
//! - the table of the app's files under `web/` (`assets.rs`, included by `src/web.rs`).
//!
//! `LEDGER_WEB_VERIFIER_WASM=<file>` uses a prebuilt module instead (a container build's
//! earlier stage). Without the wasm32 target the build stops and says how to add it.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("the crate is in the workspace")
        .to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    assets(&manifest.join("web"), &out);
    wasm(&root, &out);
}

/// Writes `assets.rs`: `(path under /app/, absolute file)` for every file under `web/`.
fn assets(web: &Path, out: &Path) {
    println!("cargo:rerun-if-changed={}", web.display());
    let mut files = Vec::new();
    walk(web, web, &mut files);
    files.sort();
    let mut code = String::from("/// Every file of the web app: its path under `/app/` and its bytes.\npub static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        code.push_str(&format!("    ({rel:?}, include_bytes!({abs:?})),\n"));
    }
    code.push_str("];\n");
    fs::write(out.join("assets.rs"), code).expect("writing assets.rs");
}

fn walk(base: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for e in entries {
        let path = e.expect("a folder entry").path();
        if path.is_dir() {
            walk(base, &path, files);
        } else {
            let rel = path
                .strip_prefix(base)
                .expect("under web/")
                .to_string_lossy()
                .replace('\\', "/");
            files.push((rel, path.display().to_string()));
        }
    }
}

/// Builds (or copies) the verifier module to `$OUT_DIR/web_verifier.wasm`.
fn wasm(root: &Path, out: &Path) {
    let dest = out.join("web_verifier.wasm");
    println!("cargo:rerun-if-env-changed=LEDGER_WEB_VERIFIER_WASM");
    if let Some(pre) = env::var_os("LEDGER_WEB_VERIFIER_WASM").filter(|v| !v.is_empty()) {
        let pre = PathBuf::from(pre);
        println!("cargo:rerun-if-changed={}", pre.display());
        fs::copy(&pre, &dest)
            .unwrap_or_else(|e| panic!("LEDGER_WEB_VERIFIER_WASM={}: {e}", pre.display()));
        return;
    }
    for p in [
        "web-verifier",
        "provenance-core/src",
        "provenance-core/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = libdir
        .as_deref()
        .and_then(|d| fs::read_dir(d).ok())
        .is_some_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore")))
        });
    if !installed {
        panic!(
            "\n\nledger-service embeds the browser's verifier, built for {WASM_TARGET}, and \
             that target is not installed.\nAdd it with:  rustup target add {WASM_TARGET}\n\
             (scripts/test and scripts/quickstart do this themselves.)\n"
        );
    }
    // <target>/<profile>/build/<pkg>-<hash>/out → <target>: a folder of its own there.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("web-verifier"))
        .unwrap_or_else(|| out.join("web-verifier-target"));
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--quiet",
            "-p",
            "web-verifier",
            "--lib",
            "--target",
            WASM_TARGET,
        ])
        .args(["--profile", "wasm", "--target-dir"])
        .arg(&target_dir)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"));
    // The outer build's settings are for the host (coverage, sanitizers, clippy's driver):
    // none of them applies to the module.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_CFG_")
            || matches!(
                k.as_str(),
                "RUSTFLAGS"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "CARGO_BUILD_RUSTFLAGS"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_BUILD_TARGET_DIR"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTC_WRAPPER"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
            )
        {
            cmd.env_remove(&k);
        }
    }
    // Reproducible bytes whatever the checkout's or cargo's folder: the module holds source paths
    // (panic locations), mapped to fixed prefixes — docs/SECURITY.md, "The web app", builds
    // the same module by hand to compare it with the served one.
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut flags = vec![format!("--remap-path-prefix={}=/src", root.display())];
    if let Some(h) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", h.display()));
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"));
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for the browser's verifier: {e}"));
    if !status.success() {
        panic!("building the browser's verifier (web-verifier for {WASM_TARGET}) failed: {status}");
    }
    let built = target_dir
        .join(WASM_TARGET)
        .join("wasm")
        .join("web_verifier.wasm");
    fs::copy(&built, &dest)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), dest.display()));
}
