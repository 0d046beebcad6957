//! The contract's cases for the side rows, claims, pruning and corrupt data.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use super::{alert, endpoint, outbox, readings_batch};
use crate::alerts::{Limit, Status};
use crate::db::*;

pub(super) async fn side_rows_are_written_with_the_batch(db: &Db) {
    db.insert_endpoint(&endpoint("ep_1")).await.unwrap();
    let mut b = readings_batch(0, 1);
    b.side = vec![
        SideRow::Alert(alert("alrt_1", 150.0)),
        SideRow::AlertEvent {
            alert_id: "alrt_1".into(),
            seq: 1,
            at: 10,
            transition: "opened",
            actor: "system".into(),
            severity: 2,
            reading_index: Some(0),
        },
        SideRow::Limit {
            patient: "p".into(),
            loinc: "8867-4".into(),
            limit: Some(Limit {
                low: Some(40.0),
                high: None,
            }),
            set_by: "dr".into(),
            at: 10,
        },
        outbox("msg_1", "ep_1", 10),
    ];
    db.commit_batch(&b).await.unwrap();
    let a = db.alert("alrt_1").await.unwrap().unwrap();
    assert_eq!((a.status, a.value, a.events), (Status::Open, 150.0, 1));
    assert_eq!(db.unresolved_alerts().await.unwrap().len(), 1);
    assert_eq!(
        db.alerts(Some("open"), Some("p"), 10).await.unwrap().len(),
        1
    );
    assert!(db
        .alerts(Some("resolved"), None, 10)
        .await
        .unwrap()
        .is_empty());
    let ev = db.alert_events("alrt_1").await.unwrap();
    assert_eq!(
        (ev[0].seq, ev[0].transition.as_str(), ev[0].reading_index),
        (1, "opened", Some(0))
    );
    let limits = db.alert_limits().await.unwrap();
    assert_eq!(
        limits,
        vec![(
            "p".into(),
            "8867-4".into(),
            Limit {
                low: Some(40.0),
                high: None
            }
        )]
    );
    assert_eq!(
        db.outbox_messages(Some("pending"), 10).await.unwrap().len(),
        1
    );
    // An update of the alert and the limit removed, in a later batch.
    let mut later = alert("alrt_1", 160.0);
    later.status = Status::Resolved;
    db.commit_batch(&Batch {
        side: vec![
            SideRow::Alert(later),
            SideRow::Limit {
                patient: "p".into(),
                loinc: "8867-4".into(),
                limit: None,
                set_by: "dr".into(),
                at: 11,
            },
        ],
        ..Batch::default()
    })
    .await
    .unwrap();
    assert_eq!(
        db.alert("alrt_1").await.unwrap().unwrap().status,
        Status::Resolved
    );
    assert!(db.unresolved_alerts().await.unwrap().is_empty());
    assert!(db.alert_limits().await.unwrap().is_empty());
}

pub(super) async fn outbox_claims_are_exclusive_and_attempts_recorded(db: &Db) {
    db.insert_endpoint(&endpoint("ep_1")).await.unwrap();
    db.insert_endpoint(&endpoint("ep_off")).await.unwrap();
    assert!(db
        .set_endpoint_disabled("ep_off", Some("gone"))
        .await
        .unwrap());
    assert!(!db.set_endpoint_disabled("ep_none", None).await.unwrap());
    let side = (0..20)
        .map(|n| outbox(&format!("msg_{n:02}"), "ep_1", 10))
        .chain([outbox("msg_off", "ep_off", 10)])
        .collect();
    db.commit_batch(&Batch {
        side,
        ..Batch::default()
    })
    .await
    .unwrap();
    // Concurrent claimers get disjoint sets, and a disabled endpoint's message waits.
    let (a, b, c) = tokio::join!(
        db.claim_outbox(100, 1000, 8),
        db.claim_outbox(100, 1000, 8),
        db.claim_outbox(100, 1000, 8)
    );
    let mut ids: Vec<String> = [a.unwrap(), b.unwrap(), c.unwrap()]
        .into_iter()
        .flatten()
        .map(|o| o.msg_id)
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a message was claimed twice");
    assert_eq!(
        n, 20,
        "every due message of an enabled endpoint claimed once: {ids:?}"
    );
    assert!(
        db.claim_outbox(500, 1000, 50).await.unwrap().is_empty(),
        "leased"
    );
    // After the lease: claimable again; attempts recorded with their outcome.
    let again = db.claim_outbox(1200, 1000, 2).await.unwrap();
    assert_eq!(again.len(), 2);
    db.record_attempt(
        &again[0],
        1200,
        Some(200),
        None,
        5,
        &DeliveryResult::Delivered,
    )
    .await
    .unwrap();
    db.record_attempt(
        &again[1],
        1200,
        Some(500),
        Some("boom"),
        5,
        &DeliveryResult::Retry(5000),
    )
    .await
    .unwrap();
    // A stale claim (its lease lapsed, another worker recorded) records nothing.
    let stale = db
        .record_attempt(
            &again[0],
            1300,
            Some(200),
            None,
            5,
            &DeliveryResult::Delivered,
        )
        .await
        .unwrap();
    assert!(
        !stale,
        "a second record for the same claimed attempt is refused"
    );
    assert_eq!(db.attempts(&again[0].msg_id).await.unwrap().len(), 1);
    let att = db.attempts(&again[1].msg_id).await.unwrap();
    assert_eq!(
        (att[0].attempt, att[0].status, att[0].error.as_deref()),
        (1, Some(500), Some("boom"))
    );
    assert_eq!(
        db.outbox_messages(Some("delivered"), 50)
            .await
            .unwrap()
            .len(),
        1
    );
    let retry = db.claim_outbox(4000, 1000, 50).await.unwrap();
    assert!(
        retry.iter().all(|o| o.msg_id != again[1].msg_id),
        "not before its retry time"
    );
    assert_eq!(db.replay_message(&again[0].msg_id, 6000).await.unwrap(), 1);
    assert_eq!(
        db.replay_message(&again[0].msg_id, 6000).await.unwrap(),
        0,
        "already pending"
    );
    // A replay starts a new round; the attempt numbers go on (the attempts' key never collides).
    let replayed = db.claim_outbox(6000, 1000, 50).await.unwrap();
    let r = replayed
        .iter()
        .find(|o| o.msg_id == again[0].msg_id)
        .unwrap();
    assert_eq!((r.attempts, r.round_start), (1, 1));
    assert!(db
        .record_attempt(r, 6000, Some(200), None, 5, &DeliveryResult::Delivered)
        .await
        .unwrap());
    let numbers: Vec<u32> = db
        .attempts(&r.msg_id)
        .await
        .unwrap()
        .iter()
        .map(|a| a.attempt)
        .collect();
    assert_eq!(numbers, [1, 2]);
    assert!(db
        .rotate_endpoint_secret("ep_1", "whsec_bmV3", 9000)
        .await
        .unwrap());
    let eps = db.webhook_endpoints().await.unwrap();
    let ep = eps.iter().find(|e| e.id == "ep_1").unwrap();
    assert_eq!(ep.previous_until, Some(9000));
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&ep.secret),
        "whsec_bmV3"
    );
    assert_eq!(ep.event_types, vec!["alert.opened".to_string()]);
}

fn job(id: &str, created_at: u64) -> ExportJob {
    ExportJob {
        id: id.into(),
        state: "queued".into(),
        request: "/v1/export".into(),
        requested_by: "arch".into(),
        patient: None,
        types: vec!["Observation".into()],
        from_index: 0,
        to_index: 4,
        checkpoint: "note".into(),
        transaction_time: 5,
        next_index: 0,
        progress: "{}".into(),
        manifest: None,
        error: None,
        created_at,
        acknowledged_at: None,
        acknowledged_by: None,
        manifest_sha256: None,
        prune_approved_at: None,
        prune_approved_by: None,
    }
}

pub(super) async fn export_claims_progress_and_ends(db: &Db) {
    db.insert_export(&job("exp_1", 1)).await.unwrap();
    db.insert_export(&job("exp_2", 2)).await.unwrap();
    let (a, b, c) = tokio::join!(
        db.claim_export(100, 1000),
        db.claim_export(100, 1000),
        db.claim_export(100, 1000)
    );
    let mut got: Vec<String> = [a.unwrap(), b.unwrap(), c.unwrap()]
        .into_iter()
        .flatten()
        .map(|j| j.id)
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec!["exp_1".to_string(), "exp_2".to_string()],
        "each job claimed once"
    );
    assert!(db.claim_export(500, 1000).await.unwrap().is_none());
    assert!(db
        .export_progress("exp_1", 2, "{\"n\":2}", 600, 1000)
        .await
        .unwrap());
    assert!(db.claim_export(1200, 1000).await.unwrap().map(|j| j.id) == Some("exp_2".into()));
    let j = db.export_job("exp_1").await.unwrap().unwrap();
    assert_eq!(
        (j.state.as_str(), j.next_index, j.types.len()),
        ("running", 2, 1)
    );
    assert!(db
        .finish_export("exp_1", Some("{}"), None, 700)
        .await
        .unwrap());
    assert!(!db
        .finish_export("exp_1", None, Some("late"), 700)
        .await
        .unwrap());
    // Pruning needs an acknowledgement first, then someone else's approval.
    assert!(!db.approve_pruning("exp_1", 750, "admin-b").await.unwrap());
    assert!(db
        .acknowledge_export("exp_1", 800, "archive-a", "ab12")
        .await
        .unwrap());
    assert!(
        !db.acknowledge_export("exp_1", 801, "archive-a", "ab12")
            .await
            .unwrap(),
        "once"
    );
    let j = db.export_job("exp_1").await.unwrap().unwrap();
    assert_eq!(j.acknowledged_at, Some(800));
    assert_eq!(j.acknowledged_by.as_deref(), Some("archive-a"));
    assert_eq!(j.manifest_sha256.as_deref(), Some("ab12"));
    assert!(
        !db.cancel_export("exp_1", 802).await.unwrap(),
        "no cancel after acknowledgement"
    );
    assert!(
        !db.approve_pruning("exp_1", 803, "archive-a").await.unwrap(),
        "not by the acknowledger"
    );
    assert!(db.approve_pruning("exp_1", 804, "admin-b").await.unwrap());
    assert!(
        !db.approve_pruning("exp_1", 805, "admin-c").await.unwrap(),
        "once"
    );
    let j = db.export_job("exp_1").await.unwrap().unwrap();
    assert_eq!(
        (j.prune_approved_at, j.prune_approved_by.as_deref()),
        (Some(804), Some("admin-b"))
    );
    assert_eq!(j.state, "complete");
    assert!(db.cancel_export("exp_2", 900).await.unwrap());
    assert!(!db.cancel_export("exp_2", 900).await.unwrap());
    assert!(
        !db.export_progress("exp_2", 3, "{}", 950, 1000)
            .await
            .unwrap(),
        "cancelled"
    );
    assert!(db.export_job("exp_none").await.unwrap().is_none());
}

pub(super) async fn pruning_empties_payloads_and_keeps_the_tree(db: &Db) {
    let mut b = readings_batch(0, 4);
    b.tiles = vec![TileRow {
        level: 0,
        idx: 0,
        hashes: vec![[1; 32]; 4],
    }];
    db.commit_batch(&b).await.unwrap();
    assert_eq!(db.export_rows(0, 4, Some("p"), 10).await.unwrap().len(), 4);
    let j = job("exp_1", 1);
    db.insert_export(&j).await.unwrap();
    // Measured before 1002: indices 0 and 1.
    assert_eq!(db.prune_export(&j, 1002, 50).await.unwrap(), 2);
    assert_eq!(
        db.prune_export(&j, 1002, 60).await.unwrap(),
        0,
        "pruned once"
    );
    assert_eq!(db.pruned_by(1).await.unwrap().as_deref(), Some("exp_1"));
    assert!(db.pruned_by(2).await.unwrap().is_none());
    assert_eq!(db.entry(0).await.unwrap().unwrap().1, Vec::<u8>::new());
    assert_eq!(
        db.entry(2).await.unwrap().unwrap().1,
        2u64.to_le_bytes().to_vec()
    );
    assert_eq!(db.log_size().await.unwrap(), 4, "entries stay");
    assert_eq!(
        db.tiles(0, &[(0, 0)]).await.unwrap()[0].hashes.len(),
        4,
        "hashes stay"
    );
}

pub(super) async fn the_fence_holds_off_a_deposed_leader(db: &Db) {
    let first = db.bump_epoch().await.unwrap();
    let second = db.bump_epoch().await.unwrap();
    assert_eq!(second, first + 1);
    let mut old = readings_batch(0, 1);
    old.fence = Some(first);
    let err = db.commit_batch(&old).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Fenced { ours, current } if *ours == first && *current == second.to_string()),
        "{err:?}"
    );
    assert_eq!(
        db.log_size().await.unwrap(),
        0,
        "a fenced batch writes nothing"
    );
    let mut current = readings_batch(0, 1);
    current.fence = Some(second);
    db.commit_batch(&current).await.unwrap();
    assert_eq!(db.log_size().await.unwrap(), 1);
}

pub(super) async fn corrupt_rows_are_errors_that_name_the_row(db: &Db) {
    db.commit_batch(&readings_batch(0, 1)).await.unwrap();
    let cp = CheckpointRow::signed(0, 1, [1; 32], "n".into());
    db.insert_checkpoint(&cp, 0).await.unwrap();
    db.commit_batch(&Batch {
        side: vec![SideRow::Alert(alert("alrt_x", 1.0))],
        ..Batch::default()
    })
    .await
    .unwrap();
    let tamper = [
        "UPDATE checkpoints SET root = $1 WHERE size = 1",
        "UPDATE alerts SET state = 'bogus' WHERE id = 'alrt_x'",
        "UPDATE tiles SET hashes = $1",
    ];
    db.commit_batch(&Batch {
        tiles: vec![TileRow {
            level: 0,
            idx: 0,
            hashes: vec![[1; 32]],
        }],
        ..Batch::default()
    })
    .await
    .unwrap();
    for sql in tamper {
        let s = Sql::new(sql);
        let s = if sql.contains("$1") {
            s.bytes(&[0; 5])
        } else {
            s
        };
        db.exec(s).await.unwrap();
    }
    let err = db.latest_checkpoint(0).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { table: "checkpoints", key, .. } if key == "shard 0 size 1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("5 bytes"), "{err}");
    let err = db.alert("alrt_x").await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { table: "alerts", key, .. } if key == "alrt_x"),
        "{err:?}"
    );
    let err = db.tiles(0, &[(0, 0)]).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { table: "tiles", key, .. } if key == "0/0"),
        "{err:?}"
    );
    db.exec(Sql::new("UPDATE entries SET logged_at = -5"))
        .await
        .unwrap();
    let err = db.max_logged_at().await.unwrap_err();
    assert!(err.to_string().contains("negative"), "{err}");
}
