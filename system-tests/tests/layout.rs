//! The workspace's layout rules, checked on the source (ARCHITECTURE.md): no import cycle among
//! the top-level modules of any product crate, no source file in `ledger-service/src` over 600
//! lines, and no product crate depending on another but `provenance-core` (dev-dependencies
//! included; the service's tests may use the test kit).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const PRODUCT: [&str; 8] = [
    "provenance-core",
    "sensor-fw",
    "gateway-uplink",
    "ledger-service",
    "verifier-cli",
    "ledger-witness",
    "web-verifier",
    "vitals-home",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules its code (not its comments) names as `crate::x`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" || top == "bin" {
            continue; // the crate root may name every module
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let deps = graph.entry(top.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + 7..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle through `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_cycle_in_any_product_crate() {
    for krate in PRODUCT {
        let g = module_graph(&root().join(krate).join("src"));
        // sensor-fw and ledger-witness are one file (their library) and a binary, web-verifier
        // its library and its ABI, vitals-home its library and its command line.
        assert!(
            g.len() > 2
                || ["sensor-fw", "ledger-witness", "web-verifier", "vitals-home"].contains(&krate),
            "{krate}: no modules found"
        );
        if let Some(c) = find_cycle(&g) {
            panic!("{krate}: module cycle {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert!(find_cycle(&g).is_none());
}

#[test]
fn no_service_source_file_over_600_lines() {
    let mut files = Vec::new();
    rust_files(&root().join("ledger-service/src"), &mut files);
    for f in files {
        let n = std::fs::read_to_string(&f).unwrap().lines().count();
        assert!(n <= 600, "{}: {n} lines", f.display());
    }
}

#[test]
fn product_crates_depend_on_no_other_product_crate() {
    for krate in PRODUCT {
        let manifest = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
        for other in PRODUCT.iter().chain(&["system-tests"]) {
            if *other == krate || *other == "provenance-core" {
                continue;
            }
            let named = manifest.lines().any(|l| {
                l.trim_start().starts_with(&format!("{other} "))
                    || l.trim_start().starts_with(&format!("{other}="))
            });
            assert!(!named, "{krate}/Cargo.toml depends on {other}");
        }
    }
}
