//! The public RFC 9162 proof vectors of transparency-dev/merkle (`testdata/rfc9162/`): every
//! `wantErr: false` case must verify and every `wantErr: true` case must be rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::merkle::{self, Hash, MemoryTree};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn cases(kind: &str) -> Vec<(PathBuf, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/rfc9162")
        .join(kind);
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                out.push((path, json));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A hash field; `None` if it is not 32 bytes of base64 (some negative cases use junk roots).
fn hash(v: &Value) -> Option<Hash> {
    B64.decode(v.as_str()?).ok()?.try_into().ok()
}

/// A root field as raw bytes (the reference verifier compares roots as byte strings).
fn bytes(v: &Value) -> Option<Vec<u8>> {
    v.as_str().map_or(Some(vec![]), |s| B64.decode(s).ok())
}

fn proof(v: &Value) -> Option<Vec<Hash>> {
    v.as_array()
        .map_or(Some(vec![]), |a| a.iter().map(hash).collect())
}

fn check(path: &Path, want_err: bool, result: Result<(), String>) {
    match (want_err, result) {
        (false, Err(e)) => panic!("{}: valid proof rejected: {e}", path.display()),
        (true, Ok(())) => panic!("{}: invalid proof accepted", path.display()),
        _ => {}
    }
}

#[test]
fn inclusion_vectors() {
    let all = cases("inclusion");
    assert!(all.len() > 60, "vectors missing: {}", all.len());
    let (mut ok, mut bad) = (0, 0);
    for (path, c) in all {
        let want_err = c["wantErr"].as_bool().unwrap();
        let result = (|| {
            let (Some(root), Some(leaf), Some(proof)) =
                (bytes(&c["root"]), hash(&c["leafHash"]), proof(&c["proof"]))
            else {
                return Err("undecodable hash".to_string());
            };
            let index = c["leafIdx"].as_u64().ok_or("index")?;
            let size = c["treeSize"].as_u64().ok_or("size")?;
            merkle::verify_inclusion(index, size, &leaf, &proof, &root).map_err(|e| e.to_string())
        })();
        if want_err {
            bad += 1
        } else {
            ok += 1
        }
        check(&path, want_err, result);
    }
    assert!(ok >= 5 && bad >= 50, "ok {ok}, bad {bad}");
}

#[test]
fn consistency_vectors() {
    let all = cases("consistency");
    assert!(all.len() >= 98, "vectors missing: {}", all.len());
    for (path, c) in all {
        let want_err = c["wantErr"].as_bool().unwrap();
        let result = (|| {
            let (Some(r1), Some(r2), Some(proof)) =
                (bytes(&c["root1"]), bytes(&c["root2"]), proof(&c["proof"]))
            else {
                return Err("undecodable hash".to_string());
            };
            let s1 = c["size1"].as_u64().ok_or("size1")?;
            let s2 = c["size2"].as_u64().ok_or("size2")?;
            merkle::verify_consistency(s1, s2, &r1, &r2, &proof).map_err(|e| e.to_string())
        })();
        check(&path, want_err, result);
    }
}

/// The reference 8-leaf tree of the vectors: our generator reproduces their root and proofs.
#[test]
fn reference_tree_matches_vectors() {
    let leaves = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    let mut tree = MemoryTree::new();
    for l in leaves {
        tree.push_data(&hex::decode(l).unwrap());
    }
    let root = tree.root_at(8).unwrap();
    assert_eq!(
        hex::encode(root),
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    );
    let hashes: Vec<Hash> = leaves
        .iter()
        .map(|l| merkle::leaf_hash(&hex::decode(l).unwrap()))
        .collect();
    assert_eq!(merkle::root_from_leaf_hashes(&hashes), root);
    for (path, c) in cases("inclusion") {
        if c["wantErr"].as_bool() == Some(false)
            && c["treeSize"].as_u64() <= Some(8)
            && c["root"] != Value::Null
        {
            let size = c["treeSize"].as_u64().unwrap();
            if size == 0 {
                continue;
            }
            let got = merkle::inclusion_proof(&tree, c["leafIdx"].as_u64().unwrap(), size).unwrap();
            assert_eq!(Some(got), proof(&c["proof"]), "{}", path.display());
        }
    }
    for (path, c) in cases("consistency") {
        if c["wantErr"].as_bool() == Some(false) && c["size2"].as_u64() <= Some(8) {
            let got = merkle::consistency_proof(
                &tree,
                c["size1"].as_u64().unwrap(),
                c["size2"].as_u64().unwrap(),
            )
            .unwrap();
            assert_eq!(Some(got), proof(&c["proof"]), "{}", path.display());
        }
    }
}
