//! The browser verifier's entry (web-verifier): any bundle against the committed vectors' real
//! trust (log key and both issuers, so the fuzzer reaches the later steps from the committed
//! bundle as a seed), or any bytes as the pinned trust; it never panics and always answers JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;

const TRUST: &str = concat!(
    r#"{"log_key": "ledger.example.org/vitals/test+3d02d365+AW57owYrBEg/+XZ/vjO06HcUwzINeZ40oINHpqG39/t/", "issuers": ["#,
    "\"",
    include_str!("../../testdata/vectors/ca.pem"),
    "\", \"",
    include_str!("../../testdata/vectors/fleet.pem"),
    "\"]}"
);

fuzz_target!(|data: &[u8]| {
    let out = match data.split_first() {
        // First byte 0: the rest is "trust length (2 bytes, little-endian), trust, bundle".
        Some((0, rest)) if rest.len() >= 2 => {
            let n = (usize::from(rest[0]) | usize::from(rest[1]) << 8).min(rest.len() - 2);
            web_verifier::verify(&rest[2 + n..], &rest[2..2 + n])
        }
        _ => web_verifier::verify(data, TRUST.replace('\n', "\\n").as_bytes()),
    };
    assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "not JSON: {out}");
});
