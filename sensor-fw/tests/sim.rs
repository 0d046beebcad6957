//! The `sensor-sim` binary end to end: a manufacturer CA, provisioned sensors, frames over UDP
//! that verify and chain to the CA, counters that survive a restart, and an injected episode.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use provenance_core::cert::DeviceCert;
use provenance_core::cose::SignedReading;
use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn sim(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_sensor-sim"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sensor-sim {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn receive(sock: &UdpSocket, n: usize, devices: &Path, ca: &DeviceCert) -> Vec<SignedReading> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    let mut certs: HashMap<String, DeviceCert> = HashMap::new();
    while out.len() < n {
        let len = sock.recv(&mut buf).expect("a frame within the timeout");
        let r = SignedReading::decode(&buf[..len]).unwrap();
        let cert = certs.entry(r.reading.sensor_id.clone()).or_insert_with(|| {
            DeviceCert::from_pem(
                &std::fs::read_to_string(devices.join(format!("{}.pem", r.reading.sensor_id)))
                    .unwrap(),
            )
            .unwrap()
        });
        cert.check_chain(ca, r.reading.measured_at_ms).unwrap();
        r.verify(&cert.public_key).unwrap();
        out.push(r);
    }
    out
}

#[test]
fn provision_run_and_restart() {
    let dir = std::env::temp_dir().join(format!("sensor-sim-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (factory, devices) = (dir.join("factory"), dir.join("devices"));
    let (f, d) = (factory.to_str().unwrap(), devices.to_str().unwrap());
    sim(&["init-ca", "--name", "Acme Sensors", "--out", f]);
    sim(&[
        "provision",
        "--factory",
        f,
        "--id",
        "SN-0001",
        "--id",
        "SN-0002",
        "--id",
        "SN-0003",
        "--out",
        d,
    ]);
    let ca =
        DeviceCert::from_pem(&std::fs::read_to_string(factory.join("ca.pem")).unwrap()).unwrap();
    // Keys are private to their owner.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(devices.join("SN-0001.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let gw = sock.local_addr().unwrap().to_string();
    sim(&[
        "run",
        "--devices",
        d,
        "--gateway",
        &gw,
        "--period-ms",
        "10",
        "--count",
        "3",
        "--episode",
        "fever:SN-0002",
    ]);
    let frames = receive(&sock, 9, &devices, &ca);
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    for r in &frames {
        seqs.entry(r.reading.sensor_id.clone())
            .or_default()
            .push(r.reading.seq);
        let temp = r
            .reading
            .measurements
            .iter()
            .find(|m| m.vital.loinc == "8310-5")
            .unwrap()
            .value
            .to_f64();
        if r.reading.sensor_id == "SN-0002" {
            assert!(temp > 38.5, "fever episode: {temp}");
        } else {
            assert!((35.5..38.0).contains(&temp), "normal temperature: {temp}");
        }
    }
    assert_eq!(seqs["SN-0001"], vec![0, 1, 2]);
    // A restart (a reboot of every sensor): numbering continues, nothing is reused.
    sim(&[
        "run",
        "--devices",
        d,
        "--gateway",
        &gw,
        "--period-ms",
        "10",
        "--count",
        "2",
    ]);
    let frames = receive(&sock, 6, &devices, &ca);
    let mut after: Vec<u64> = frames
        .iter()
        .filter(|r| r.reading.sensor_id == "SN-0003")
        .map(|r| r.reading.seq)
        .collect();
    after.sort_unstable();
    assert_eq!(after, vec![3, 4]);
    // Gateways are provisioned the same way, with the gateway role.
    let gws = dir.join("gateways");
    sim(&[
        "provision",
        "--factory",
        f,
        "--role",
        "gateway",
        "--id",
        "GW-0001",
        "--out",
        gws.to_str().unwrap(),
    ]);
    let gw =
        DeviceCert::from_pem(&std::fs::read_to_string(gws.join("GW-0001.pem")).unwrap()).unwrap();
    assert_eq!(gw.role, provenance_core::cert::Role::Gateway);
    gw.check_chain(&ca, gw.not_before_ms + 1).unwrap();
    // Provisioning never overwrites a key.
    let out = Command::new(env!("CARGO_BIN_EXE_sensor-sim"))
        .args(["provision", "--factory", f, "--id", "SN-0001", "--out", d])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
