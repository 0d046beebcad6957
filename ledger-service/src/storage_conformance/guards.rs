//! The contract's cases for the guards: tokens, the access trail, security alerts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use super::endpoint;
use crate::db::*;

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
