//! The household page's entry natively: a recipient key's public key is the committed
//! vectors'; a page that is not a feed is refused at its first step, with the state unchanged;
//! an unusable key, trust or state is an `{"error"}` answer, never a report.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use serde_json::{json, Value};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../provenance-core/testdata/vectors"
);

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{VECTORS}/{name}")).unwrap()
}

fn state() -> Value {
    json!({"household": "HH-0001", "accepted": [], "last_index": null, "gateway_seq": {},
           "sensor_seq": {}, "checkpoint_size": 0})
}

fn input(secret: &str, state: Value) -> Vec<u8> {
    let log: Value = serde_json::from_str(&read("log.json")).unwrap();
    json!({"trust": {"log_key": log["vkey"], "issuers": [read("ca.pem"), read("fleet.pem")]},
           "secret": secret, "state": state})
    .to_string()
    .into_bytes()
}

#[test]
fn a_recipient_keys_public_key_is_the_vectors() {
    let v: Value = serde_json::from_str(&read("private.json")).unwrap();
    for r in v["recipients"].as_array().unwrap() {
        let out: Value = serde_json::from_str(&web_verifier::recipient_public(
            r["private_key"].as_str().unwrap().as_bytes(),
        ))
        .unwrap();
        assert_eq!(out["public_key"], r["public_key"]);
        assert_eq!(out["key_id"], r["kid"]);
    }
    for bad in ["", "zz", &"1".repeat(63), &"g".repeat(64)] {
        let out: Value =
            serde_json::from_str(&web_verifier::recipient_public(bad.as_bytes())).unwrap();
        assert!(out["error"].is_string(), "{bad:?}: {out}");
    }
}

#[test]
fn what_is_not_a_feed_page_is_refused_and_moves_nothing() {
    let v: Value = serde_json::from_str(&read("private.json")).unwrap();
    let secret = v["recipients"][0]["private_key"].as_str().unwrap();
    for page in [
        b"not json".as_slice(),
        br#"{"media_type": "x"}"#,
        read("bundle.json").as_bytes(),
    ] {
        let out: Value =
            serde_json::from_str(&web_verifier::home(page, &input(secret, state()))).unwrap();
        assert_eq!(out["page"]["verified"], false, "{out}");
        assert_eq!(out["page"]["checks"][0]["step"], "feed.format");
        assert_eq!(out["state"], state(), "the state is unchanged");
        assert!(out["messages"].as_array().unwrap().is_empty());
    }
    // Unusable inputs: an answer with an error, no report.
    let mut extra = state();
    extra["unknown"] = json!(1);
    for bad in [
        input("zz", state()),
        input(secret, json!({"household": "HH-0001"})),
        input(secret, extra),
        b"{}".to_vec(),
        br#"{"trust": {"log_key": "not a vkey"}, "secret": "00", "state": {}}"#.to_vec(),
    ] {
        let out: Value = serde_json::from_str(&web_verifier::home(b"{}", &bad)).unwrap();
        assert!(
            out["error"].is_string() && out.get("page").is_none(),
            "{out}"
        );
    }
}
