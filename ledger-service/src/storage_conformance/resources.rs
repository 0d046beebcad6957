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
        db.tiles(&[(0, 0)]).await.unwrap()[0].hashes.len(),
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
    let cp = CheckpointRow {
        size: 1,
        root: [1; 32],
        note: "n".into(),
    };
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
    let err = db.latest_checkpoint().await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { table: "checkpoints", key, .. } if key == "size 1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("5 bytes"), "{err}");
    let err = db.alert("alrt_x").await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { table: "alerts", key, .. } if key == "alrt_x"),
        "{err:?}"
    );
    let err = db.tiles(&[(0, 0)]).await.unwrap_err();
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

fn token(id: &str, created_at: u64, gateway: Option<&str>) -> TokenRow {
    TokenRow {
        id: id.into(),
        role: if gateway.is_some() {
            "gateway"
        } else {
            "admin"
        }
        .into(),
        name: format!("name of {id}"),
        gateway: gateway.map(str::to_string),
        created_at,
        created_by: "cli".into(),
        expires_at: created_at + 1000,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
    }
}

pub(super) async fn tokens_end_and_page(db: &Db) {
    let a = token("tok_a", 10, None);
    let b = token("tok_b", 10, Some("GW-1"));
    let c = token("tok_c", 5, Some("*"));
    for (h, t) in [([1u8; 32], &a), ([2; 32], &b), ([3; 32], &c)] {
        db.insert_token(&h, t).await.unwrap();
    }
    // The same secret hash or id twice is refused.
    db.insert_token(&[1; 32], &token("tok_z", 1, None))
        .await
        .unwrap_err();
    db.insert_token(&[9; 32], &token("tok_a", 1, None))
        .await
        .unwrap_err();
    assert_eq!(db.token(&[2; 32]).await.unwrap(), Some(b.clone()));
    assert_eq!(db.token_by_id("tok_c").await.unwrap(), Some(c.clone()));
    assert!(db.token(&[8; 32]).await.unwrap().is_none());
    // Pages in (created-at, id) order; a cursor between equal times splits them.
    let ids = |v: Vec<TokenRow>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.tokens_page(None, 10).await.unwrap()),
        ["tok_c", "tok_a", "tok_b"]
    );
    assert_eq!(
        ids(db.tokens_page(Some((10, "tok_a")), 10).await.unwrap()),
        ["tok_b"]
    );
    assert_eq!(
        ids(db.tokens_page(Some((5, "tok_c")), 1).await.unwrap()),
        ["tok_a"]
    );
    // Revoked once; the second revocation changes nothing.
    assert!(db.revoke_token("tok_a", 50, "admin-x").await.unwrap());
    assert!(!db.revoke_token("tok_a", 60, "admin-y").await.unwrap());
    assert!(!db.revoke_token("tok_nope", 60, "admin-y").await.unwrap());
    let got = db.token_by_id("tok_a").await.unwrap().unwrap();
    assert_eq!(
        (got.revoked_at, got.revoked_by.as_deref()),
        (Some(50), Some("admin-x"))
    );
    // The expiry only moves earlier.
    db.expire_token_by("tok_b", 500).await.unwrap();
    db.expire_token_by("tok_b", 900).await.unwrap();
    assert_eq!(
        db.token_by_id("tok_b").await.unwrap().unwrap().expires_at,
        500
    );
    db.touch_token(&[3; 32], 77).await.unwrap();
    assert_eq!(
        db.token_by_id("tok_c").await.unwrap().unwrap().last_used_at,
        Some(77)
    );
}

pub(super) async fn the_access_trail_is_append_only(db: &Db) {
    let rec = |at: u64, patient: Option<&str>| crate::db::access::AccessRecord {
        id: 0,
        at,
        token_id: "tok_1".into(),
        token_name: "dr".into(),
        role: "clinician".into(),
        method: "GET".into(),
        path: "/v1/readings".into(),
        query: "patient=p".into(),
        patient: patient.map(str::to_string),
        status: 200,
        remote: "127.0.0.1".into(),
    };
    // More rows than one statement holds: all written, ids in order.
    let many: Vec<_> = (0..150)
        .map(|i| rec(i, if i % 2 == 0 { Some("p") } else { None }))
        .collect();
    db.insert_access(&many).await.unwrap();
    let f = crate::db::access::AccessFilter {
        from: 0,
        to: u64::MAX >> 2,
        ..Default::default()
    };
    let all = db.access_page(&f, 1000).await.unwrap();
    assert_eq!(all.len(), 150);
    assert!(all
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].at < w[1].at));
    assert_eq!(
        all[0],
        crate::db::access::AccessRecord {
            id: all[0].id,
            ..rec(0, Some("p"))
        }
    );
    let p = crate::db::access::AccessFilter {
        patient: Some("p".into()),
        ..f.clone()
    };
    assert_eq!(db.access_page(&p, 1000).await.unwrap().len(), 75);
    let after = crate::db::access::AccessFilter {
        after: Some(all[99].id),
        ..f.clone()
    };
    assert_eq!(db.access_page(&after, 1000).await.unwrap().len(), 50);
    let window = crate::db::access::AccessFilter {
        from: 10,
        to: 20,
        ..f.clone()
    };
    assert_eq!(db.access_page(&window, 1000).await.unwrap().len(), 10);
    // Append-only: the engine refuses to change or remove a record.
    for stmt in [
        "UPDATE access_log SET status = 500",
        "DELETE FROM access_log",
    ] {
        let err = db.exec(Sql::new(stmt)).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
    }
    assert_eq!(db.access_page(&f, 1000).await.unwrap(), all);
}

pub(super) async fn security_alerts_count_and_notify_once(db: &Db) {
    use crate::db::security::{Notice, Occurrence};
    db.insert_endpoint(&endpoint("ep_1")).await.unwrap();
    db.insert_endpoint(&endpoint("ep_2")).await.unwrap();
    let occ = |key: &str, n: u64, at: u64| Occurrence {
        kind: "bad_signatures",
        subject: "kid".into(),
        key: key.into(),
        detail: "d".into(),
        at,
        n,
        sample_sha256: vec![1; 32],
        threshold: 3,
    };
    let notice = |id: &str| Notice {
        msg_id: id.into(),
        endpoints: vec!["ep_1".into(), "ep_2".into()],
        payload: "{}".into(),
    };
    // Below the threshold: counted, nothing sent; crossing it: one message per endpoint; past
    // it: counted on, nothing more.
    db.record_security(&occ("k1", 2, 10), Some(&notice("msg_a")))
        .await
        .unwrap();
    assert!(db.outbox_messages(None, 100).await.unwrap().is_empty());
    db.record_security(&occ("k1", 2, 20), Some(&notice("msg_b")))
        .await
        .unwrap();
    db.record_security(&occ("k1", 5, 30), Some(&notice("msg_c")))
        .await
        .unwrap();
    let sent = db.outbox_messages(None, 100).await.unwrap();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|m| m.msg_id == "msg_b"));
    // Another key is another alert.
    db.record_security(&occ("k2", 1, 40), None).await.unwrap();
    let all = db.security_alerts(None, 0, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (
            all[0].key.as_str(),
            all[0].count,
            all[0].first_at,
            all[0].last_at
        ),
        ("k1", 9, 10, 30)
    );
    assert_eq!(all[1].count, 1);
    assert_eq!(
        db.security_alerts(None, all[0].id, 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        db.security_alerts(Some("equivocation"), 0, 10)
            .await
            .unwrap()
            .len(),
        0
    );
}
