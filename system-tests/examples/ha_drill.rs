//! The high-availability drill, full form (`scripts/ha-drill`): see `ledger_testkit::ha`.
//!
//!   cargo run --release -p system-tests --example ha_drill -- [readings/s] [sensors] [settle s]

use ledger_testkit::ha::Drill;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let arg = |i: usize, d: u64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let drill = Drill {
        dir: std::env::temp_dir().join("ledger-ha-drill"),
        port_base: 26400,
        rate: arg(1, 1000) as u32,
        sensors: arg(2, 200) as usize,
        settle_s: arg(3, 10),
    };
    let report = drill.run().await;
    println!("{report}");
    let ok = report.lost == 0
        && report.duplicates == 0
        && report.rejected == 0
        && report.acked == report.sent
        && report.checkpoints_proved == report.checkpoints
        && report.read_node_proved == report.checkpoints
        && report.gateway_uploaded == report.gateway_accepted
        && report.gateway_logged as u64 == report.gateway_accepted;
    println!("{}", if ok { "DRILL PASSED" } else { "DRILL FAILED" });
    std::process::exit(if ok { 0 } else { 1 });
}
