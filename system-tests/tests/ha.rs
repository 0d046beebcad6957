//! The high-availability drill's short form (issue #18): a real Patroni cluster (three
//! PostgreSQL 15 members, synchronous replication, three etcd members) started by
//! `scripts/ha-cluster`, two `ledger-service` processes, steady gateway load; `kill -9` of the
//! primary database member, of the leading service node and of etcd's leader. No acknowledged
//! reading may be lost or logged twice, and every checkpoint published during the drill must be
//! proved consistent with the last. `scripts/ha-drill` runs the long form and prints the table.

use ledger_testkit::ha::Drill;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_over_under_load_loses_and_duplicates_nothing() {
    if std::env::var("LEDGER_TEST_HA").as_deref() == Ok("0") {
        eprintln!("skipped: LEDGER_TEST_HA=0");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ledger-ha-test-{}", std::process::id()));
    let drill = Drill {
        dir: dir.clone(),
        port_base: 25400,
        rate: 200,
        sensors: 20,
        settle_s: 2,
    };
    let report = drill.run().await;
    println!("{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicates, 0, "{report}");
    assert_eq!(report.rejected, 0, "{report}");
    assert_eq!(
        report.acked, report.sent,
        "every reading sent is acknowledged: {report}"
    );
    assert_eq!(report.logged, report.sent, "{report}");
    assert_eq!(report.faults.len(), 3);
    assert!(report.checkpoints >= 5, "{report}");
    assert_eq!(report.checkpoints_proved, report.checkpoints, "{report}");
    assert_eq!(report.read_node_proved, report.checkpoints, "{report}");
    // The real gateway: everything it accepted is acknowledged and logged once; it moved.
    assert!(report.gateway_accepted > 100, "{report}");
    assert_eq!(report.gateway_uploaded, report.gateway_accepted, "{report}");
    assert_eq!(
        report.gateway_logged as u64, report.gateway_accepted,
        "{report}"
    );
    assert!(
        report.gateway_failovers >= 1,
        "the gateway moved to the other node: {report}"
    );
    // Each fault cost at most the failure detection time, not an outage.
    for f in &report.faults {
        assert!(f.unavailable_s < 60.0, "{}: {} s", f.fault, f.unavailable_s);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
