//! The owner's app (private mode): any bytes as a household feed page, verified against the
//! committed vectors' trust with a committed recipient key and a fresh state, never panic; the
//! state only moves forward; the browser's entry (web-verifier's `home`) always answers JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::audit::home::{verify_feed, HomeState};
use provenance_core::audit::trust::Trust;
use provenance_core::private::RecipientSecret;

const LOG_KEY: &str =
    "ledger.example.org/vitals/test+3d02d365+AW57owYrBEg/+XZ/vjO06HcUwzINeZ40oINHpqG39/t/";

fuzz_target!(|data: &[u8]| {
    let trust = Trust::pinned(
        LOG_KEY,
        &[
            include_str!("../../testdata/vectors/ca.pem"),
            include_str!("../../testdata/vectors/fleet.pem"),
        ],
        &[],
        0,
        Vec::new(),
    )
    .expect("the committed trust");
    let secret = RecipientSecret::derive(b"provenance-core test recipient: alice-phone");
    let mut state = HomeState {
        household: "HH-0001".into(),
        ..HomeState::default()
    };
    let c = verify_feed(data, &trust, &secret, &mut state);
    if state.last_index.is_some() {
        assert!(c.messages.iter().any(|m| m.reading.is_some()));
    }
    let input = format!(
        r#"{{"trust": {{"log_key": "{LOG_KEY}"}}, "secret": "{}", "state": {{"household": "HH-0001", "accepted": [], "last_index": null, "gateway_seq": {{}}, "sensor_seq": {{}}, "checkpoint_size": 0}}}}"#,
        "11".repeat(32)
    );
    let out = web_verifier::home(data, input.as_bytes());
    assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "not JSON: {out}");
});
