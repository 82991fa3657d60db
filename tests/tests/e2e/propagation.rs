//! "Has my change reached every service?": `ListClients` and `WaitForRevision` with real SDK
//! clients, one of them behind a stalled path, one closed before the change.

use flagstaff_proto::pb;
use flagstaff_tests::proxy::{FaultProxy, Mode};
use flagstaff_tests::{Admin, TestServer};
use tonic::Code;

use super::fixtures::*;

async fn setup() -> (TestServer, Admin, String) {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let token = sdk_token(&server, "checkout-sdk", "production").await;
    (server, admin, token)
}

async fn flip(admin: &mut Admin) -> u64 {
    admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "production".into(),
            key: "checkout".into(),
            enabled: false,
            ..Default::default()
        })
        .await
        .expect("flipped")
        .into_inner()
        .revision
}

async fn wait(admin: &mut Admin, revision: u64, timeout_ms: u64) -> pb::WaitForRevisionResponse {
    admin
        .wait_for_revision(pb::WaitForRevisionRequest {
            environment: "production".into(),
            revision,
            timeout_ms,
        })
        .await
        .expect("an answer, also on timeout")
        .into_inner()
}

#[tokio::test]
async fn wait_for_revision_reports_every_client_the_frozen_one_and_the_gone_one() {
    let (server, mut admin, token) = setup().await;
    let proxy = FaultProxy::start(server.addr).await;
    let clients = [
        sdk_client(server.endpoint(), &token, "checkout"),
        sdk_client(server.endpoint(), &token, "search"),
        sdk_client(proxy.endpoint(), &token, "frozen"),
    ];
    for c in &clients {
        c.wait_ready(PATIENCE).await.expect("ready");
    }
    let gone = sdk_client(server.endpoint(), &token, "gone");
    gone.wait_ready(PATIENCE).await.expect("ready");

    // Everyone applied the current revision.
    let answer = wait(&mut admin, 0, 5_000).await;
    assert!(answer.complete, "{answer:?}");
    assert_eq!((answer.applied, answer.connected), (4, 4));

    // One client closes; one's path freezes silently (its stream stays open on the server).
    gone.close();
    proxy.set(Mode::Stall);
    let listed = eventually("the close", async || {
        let listed = admin
            .list_clients(pb::ListClientsRequest {
                environment: "production".into(),
            })
            .await
            .expect("listed")
            .into_inner();
        (listed.clients.iter().filter(|c| c.connected).count() == 3).then_some(listed)
    })
    .await;
    assert_eq!(listed.clients.len(), 4, "the closed one is still listed");
    assert!(
        listed.clients[..3].iter().all(|c| c.connected),
        "connected first"
    );
    let closed = &listed.clients[3];
    assert_eq!(closed.application, "gone");
    assert!(closed.disconnected_unix_ms > 0);
    assert_eq!(closed.token, "checkout-sdk");
    assert!(closed.sdk_version.starts_with("flagstaff-rust/"));

    let revision = flip(&mut admin).await;
    let answer = wait(&mut admin, revision, 700).await;
    assert!(!answer.complete, "{answer:?}");
    assert_eq!(
        (answer.revision, answer.applied, answer.connected),
        (revision, 2, 3)
    );
    let pending: Vec<&str> = answer
        .pending
        .iter()
        .map(|c| c.application.as_str())
        .collect();
    assert_eq!(pending, ["frozen"]);
    let disconnected: Vec<&str> = answer
        .disconnected
        .iter()
        .map(|c| c.application.as_str())
        .collect();
    assert_eq!(
        disconnected,
        ["gone"],
        "a complete-looking count never hides it"
    );
    assert!(answer.elapsed_ms >= 700);

    // The path thaws: the frozen client catches up (or gives up on the stream and resumes).
    proxy.set(Mode::Pass);
    let answer = wait(&mut admin, revision, PATIENCE.as_millis() as u64).await;
    assert!(answer.complete, "{answer:?}");
    assert_eq!(answer.applied, answer.connected);
}

#[tokio::test]
async fn a_revision_ahead_of_the_environment_is_refused() {
    let (_server, mut admin, _token) = setup().await;
    let status = admin
        .wait_for_revision(pb::WaitForRevisionRequest {
            environment: "production".into(),
            revision: 99,
            timeout_ms: 100,
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "revision 99 is ahead of environment \"production\", which is at revision 1"
    );
    // With no client at all, a wait is complete at once: 0 of 0.
    let answer = wait(&mut admin, 0, 5_000).await;
    assert!(answer.complete);
    assert_eq!((answer.applied, answer.connected), (0, 0));
}
