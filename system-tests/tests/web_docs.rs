//! The API console at `/docs` (issue #19) in a real browser (Debian's headless Chromium): it
//! loads from the service alone — no request leaves 127.0.0.1 — and an integrator authorises
//! with a bearer token and performs one "Try it out" call that the service answers 200.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit::{Browser, Engine, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_console_authorises_and_tries_a_call_offline() {
    if !Browser::available("the API console's browser test") {
        return;
    }
    let app = TestApp::spawn(Engine::preferred()).await;
    let b = Browser::launch(1280, 900).await;
    let base = app.base.clone();
    b.client.goto(&format!("{base}/docs")).await.unwrap();
    b.wait_js(
        "document.querySelector('.swagger-ui .info .title') && document.querySelector('#operations-log-log_status')",
        30,
    )
    .await;
    let title = b
        .js("return document.querySelector('.swagger-ui .info .title').textContent")
        .await;
    assert!(title.as_str().unwrap().contains("ledger"), "{title}");

    // Authorize: the bearer token, in Swagger UI's own dialog.
    let click = |sel: &'static str| {
        let c = b.client.clone();
        async move {
            c.wait()
                .for_element(fantoccini::Locator::Css(sel))
                .await
                .unwrap_or_else(|e| panic!("{sel}: {e}"))
                .click()
                .await
                .unwrap_or_else(|e| panic!("{sel}: {e}"));
        }
    };
    click(".swagger-ui .auth-wrapper .btn.authorize").await;
    let input = b
        .client
        .wait()
        .for_element(fantoccini::Locator::Css(".swagger-ui .modal-ux input"))
        .await
        .unwrap();
    input.send_keys(&app.reader).await.unwrap();
    click(".swagger-ui .modal-ux .auth-btn-wrapper .btn.modal-btn.auth.authorize").await;
    click(".swagger-ui .modal-ux .btn-done, .swagger-ui .modal-ux .close-modal").await;

    // Try it out: GET /v1/log/status (a reader's route), answered 200 with the log's status.
    click("#operations-log-log_status .opblock-summary").await;
    click("#operations-log-log_status .try-out__btn").await;
    click("#operations-log-log_status .btn.execute").await;
    let status = b
        .wait_js(
            "(document.querySelector('#operations-log-log_status .live-responses-table .response .response-col_status') || {}).textContent",
            20,
        )
        .await;
    assert_eq!(
        status.as_str().unwrap().trim(),
        "200",
        "the call was authorised"
    );
    let body = b
        .js("return document.querySelector('#operations-log-log_status .live-responses-table .response-col_description pre').textContent")
        .await;
    assert!(body.as_str().unwrap().contains("\"origin\""), "{body}");

    // Nothing but the service: no request elsewhere, and the proxy forwarded loopback only.
    let elsewhere = b.requests_elsewhere(&base).await;
    assert!(elsewhere.is_empty(), "requests elsewhere: {elsewhere:?}");
    let page = b.page_requests().await;
    assert!(
        page.iter()
            .any(|u| u.ends_with("/docs/swagger-ui-bundle.js")),
        "{page:?}"
    );
    assert!(
        page.iter().any(|u| u.ends_with("/openapi.json")),
        "{page:?}"
    );
    assert!(
        page.iter().any(|u| u.ends_with("/v1/log/status")),
        "{page:?}"
    );
    b.close().await;
    app.finish().await;
}
