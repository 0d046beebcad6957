//! The browser verifier natively: the committed evidence-bundle vector verifies against the
//! committed trust with ledger-verify's steps; a changed byte fails at its step; unusable
//! trust is an `{"error"}` answer, never a report; the ABI frames its answers and frees them.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)] // tests may panic; the ABI test calls it

use serde_json::{json, Value};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../provenance-core/testdata/vectors"
);

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{VECTORS}/{name}")).unwrap()
}

fn trust() -> Value {
    let log: Value = serde_json::from_str(&read("log.json")).unwrap();
    json!({ "log_key": log["vkey"], "issuers": [read("ca.pem"), read("fleet.pem")] })
}

fn verify(bundle: &str, trust: &Value) -> Value {
    serde_json::from_str(&web_verifier::verify(
        bundle.as_bytes(),
        trust.to_string().as_bytes(),
    ))
    .unwrap()
}

#[test]
fn the_committed_bundle_verifies_step_by_step() {
    let r = verify(&read("bundle.json"), &trust());
    assert_eq!(r["verified"], true, "{r:#}");
    let steps: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_str().unwrap())
        .collect();
    for s in [
        "bundle.format",
        "checkpoint.signature",
        "reading.inclusion",
        "registry.complete",
        "sensor.signature",
        "gateway.signature",
    ] {
        assert!(steps.contains(&s), "{s} in {steps:?}");
    }
}

#[test]
fn a_changed_byte_fails_at_its_step() {
    let mut b: Value = serde_json::from_str(&read("bundle.json")).unwrap();
    let leaf = b["reading"]["leaf_data"].as_str().unwrap().to_string();
    let mut c: Vec<char> = leaf.chars().collect();
    let i = c.len() / 2;
    c[i] = if c[i] == 'A' { 'B' } else { 'A' };
    b["reading"]["leaf_data"] = json!(c.into_iter().collect::<String>());
    let r = verify(&b.to_string(), &trust());
    assert_eq!(r["verified"], false);
    let first = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ok"] == false)
        .unwrap();
    assert_eq!(first["step"], "reading.inclusion", "{r:#}");
    // Not a bundle at all.
    let r = verify("[1, 2", &trust());
    assert_eq!(r["checks"][0]["step"], "bundle.format");
    assert_eq!(r["verified"], false);
}

#[test]
fn unusable_trust_is_an_error_not_a_verdict() {
    let bundle = read("bundle.json");
    let t = trust();
    let log_key = t["log_key"].clone();
    for (why, bad) in [
        ("not JSON", Value::String("{".into())),
        ("no log key", json!({ "issuers": [] })),
        (
            "an unknown field",
            json!({ "log_key": log_key, "extra": 1 }),
        ),
        (
            "a log key that is not a vkey",
            json!({ "log_key": "not a key" }),
        ),
        (
            "an issuer that is not PEM",
            json!({ "log_key": log_key, "issuers": ["hello"] }),
        ),
        (
            "the log's own key as a witness",
            json!({ "log_key": log_key, "witnesses": [log_key] }),
        ),
    ] {
        let text = match &bad {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let r: Value =
            serde_json::from_str(&web_verifier::verify(bundle.as_bytes(), text.as_bytes()))
                .unwrap();
        assert!(r["error"].is_string(), "{why}: {r}");
        assert!(
            r.get("verified").is_none(),
            "{why}: no verdict without trust"
        );
    }
    let huge = vec![b' '; web_verifier::MAX_TRUST_LEN + 1];
    let r: Value = serde_json::from_str(&web_verifier::verify(bundle.as_bytes(), &huge)).unwrap();
    assert!(r["error"].as_str().unwrap().contains("more than"), "{r}");
}

#[test]
fn the_abi_frames_and_frees_its_answers() {
    use web_verifier::abi::{wv_alloc, wv_free, wv_verify, wv_version};
    let bundle = read("bundle.json").into_bytes();
    let trust = trust().to_string().into_bytes();
    let put = |bytes: &[u8]| {
        let p = wv_alloc(bytes.len());
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        p
    };
    let (bp, tp) = (put(&bundle), put(&trust));
    let out = unsafe { wv_verify(bp, bundle.len(), tp, trust.len()) };
    let n = u32::from_le_bytes(unsafe { *(out as *const [u8; 4]) }) as usize;
    let text = unsafe { std::slice::from_raw_parts(out.add(4), n) };
    let r: Value = serde_json::from_slice(text).unwrap();
    assert_eq!(r["verified"], true);
    unsafe {
        wv_free(out, n + 4);
        wv_free(bp, bundle.len());
        wv_free(tp, trust.len());
        wv_free(std::ptr::null_mut(), 0);
    }
    let v = wv_version();
    let n = u32::from_le_bytes(unsafe { *(v as *const [u8; 4]) }) as usize;
    assert_eq!(
        unsafe { std::slice::from_raw_parts(v.add(4), n) },
        env!("CARGO_PKG_VERSION").as_bytes()
    );
    unsafe { wv_free(v, n + 4) };
}
