//! A rollout plan survives a restart of the real server: killed during a stage, restarted
//! after the stage fell due, it advances once (no stage skipped), gives the next stage its
//! full hold, and completes.

use super::*;

async fn plan(client: &mut AdminClient<Channel>, token: &str) -> pb::RolloutPlan {
    let request = pb::GetRolloutRequest {
        environment: "production".into(),
        flag: "banner".into(),
    };
    client
        .get_rollout(authorized(request, token))
        .await
        .expect("the plan")
        .into_inner()
        .plan
        .expect("a plan")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_survives_a_restart_without_skipping_a_stage() {
    let dir = tempfile::tempdir().expect("data dir");
    let daemon = Daemon::start(dir.path(), &[], &[]);
    let mut client = daemon.client().await;
    let token = token(dir.path());
    client
        .create_environment(authorized(
            pb::CreateEnvironmentRequest {
                environment: "production".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("environment");
    let flag = flagstaff_engine::flag_from_value(&serde_json::json!({
        "key": "banner", "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "off"},
    }))
    .expect("flag");
    let request = pb::CreateFlagRequest {
        environment: "production".into(),
        flag: Some(pb::Flag::from(&flag)),
        ..Default::default()
    };
    client
        .create_flag(authorized(request, &token))
        .await
        .expect("flag");
    // 20% for 1 s, 60% for 3 s, then 100%.
    let request = pb::StartRolloutRequest {
        environment: "production".into(),
        flag: "banner".into(),
        target_variant: "on".into(),
        stages: vec![
            pb::RolloutStage {
                percent: 20_000,
                hold_ms: 1_000,
            },
            pb::RolloutStage {
                percent: 60_000,
                hold_ms: 3_000,
            },
            pb::RolloutStage {
                percent: 100_000,
                hold_ms: 0,
            },
        ],
        ..Default::default()
    };
    client
        .start_rollout(authorized(request, &token))
        .await
        .expect("started");
    let due = plan(&mut client, &token).await.next_stage_unix_ms;
    daemon.kill();

    // Down until the first stage has fallen due: it is overdue when the server returns. Real
    // time: the server is another process, on the system clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    tokio::time::sleep(Duration::from_millis((due - now).max(0) as u64 + 1)).await;
    let daemon = Daemon::start(dir.path(), &[], &[]);
    let mut client = daemon.client().await;
    let p = eventually(
        "the overdue stage to advance after the restart",
        async || {
            let p = plan(&mut client, &token).await;
            (p.stage_index > 0).then_some(p)
        },
    )
    .await;
    assert_eq!(
        (p.stage_index, p.percent),
        (1, 60_000),
        "one stage, not two"
    );
    assert_eq!(p.state, pb::RolloutState::Running as i32);
    assert_eq!(
        p.next_stage_unix_ms - p.stage_started_unix_ms,
        3_000,
        "the next stage gets its full hold"
    );

    let p = eventually("the plan to complete", async || {
        let p = plan(&mut client, &token).await;
        (p.state == pb::RolloutState::Completed as i32).then_some(p)
    })
    .await;
    let steps: Vec<(i32, u32)> = p.history.iter().map(|e| (e.kind, e.percent)).collect();
    use pb::RolloutEventKind as K;
    assert_eq!(
        steps,
        [
            (K::Started as i32, 20_000),
            (K::Advanced as i32, 60_000),
            (K::Completed as i32, 100_000)
        ]
    );
    let held = p.history[2].time_unix_ms - p.history[1].time_unix_ms;
    assert!(held >= 3_000, "the 60% stage was held {held} ms");
    let request = pb::GetFlagRequest {
        environment: "production".into(),
        key: "banner".into(),
    };
    let flag = client
        .get_flag(authorized(request, &token))
        .await
        .expect("flag")
        .into_inner()
        .flag
        .expect("flag");
    assert_eq!(
        flag.default.and_then(|d| d.serve),
        Some(pb::serve::Serve::Variant("on".into()))
    );
    daemon.kill();
}
