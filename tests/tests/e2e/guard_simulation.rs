//! The guard's error rates, measured: 200 guarded plans driven by synthetic traffic through
//! real SDK clients and the real server, once with the target as good as the baseline and
//! once with the target at three times the baseline's event rate.
//!
//! The traffic (fixed seed): every plan has its own flag and its own event key, and stages
//! `10% for 1 h → 50% for 1 h → 100%`, guarded at a ratio of 1.5, deciding after 100 events.
//! In every stage, each flag is evaluated for 6,000 contexts drawn from 100,000 keys, in 10
//! batches of 600, one batch per 6 simulated minutes; a context that gets the baseline tracks
//! the flag's event with probability 5%, one that gets the target with 5% (equal) or 15% (3×).
//! After each batch the clients report their metrics and the (manual) clock moves on, and the
//! simulation waits for the scheduler to step every plan then due. The run ends with the
//! second stage's last report, before that stage's hold ends and the plans complete.
//! docs/benchmarks.md reports the rates and times this prints.

use std::sync::Arc;
use std::time::Duration;

use flagstaff::{Client, Context};
use flagstaff_proto::pb;
use flagstaff_server::clock::{Clock, ManualClock};
use flagstaff_tests::Admin;

use super::fixtures::*;

const PLANS: usize = 200;
const HOLD_MS: u64 = 3_600_000;
const CONTEXTS_PER_STAGE: usize = 6_000;
const BATCHES_PER_STAGE: usize = 10;
const KEYS: u64 = 100_000;
const BASE_RATE: f64 = 0.05;
const CLIENTS: usize = 4;
const START_MS: u64 = 1_800_000_000_000;

/// xorshift64*: the traffic's fixed-seed random numbers.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

fn flag_key(i: usize) -> String {
    format!("sim-{i:03}")
}

fn event_key(i: usize) -> String {
    format!("error-{i:03}")
}

/// What happened to the plans.
struct Outcome {
    /// Per plan: the simulated time from its start to its rollback, if it was rolled back.
    rolled_back_after_ms: Vec<Option<u64>>,
    /// Per plan: its stage when the run ended (0-based).
    stages: Vec<u32>,
}

async fn plans(admin: &mut Admin) -> Vec<pb::RolloutPlan> {
    let mut plans = admin
        .list_rollouts(pb::ListRolloutsRequest {
            environment: "production".into(),
            include_finished: true,
        })
        .await
        .expect("plans")
        .into_inner()
        .plans;
    plans.sort_by(|a, b| a.flag.cmp(&b.flag));
    plans
}

/// Moves the clock on by `by` and waits until the scheduler has stepped every plan due at
/// the new time: until no running plan is due. Reading plans any earlier races the scheduler.
async fn step(clock: &ManualClock, admin: &mut Admin, by: Duration) {
    clock.advance(by);
    let now = clock.now_ms() as i64;
    eventually_within(
        "the scheduler's step of every plan due",
        PATIENCE * 3,
        async || none_due(&plans(admin).await, now),
    )
    .await;
}

/// Whether no plan in `plans` is running with its next stage due at `now_ms`.
fn none_due(plans: &[pb::RolloutPlan], now_ms: i64) -> bool {
    plans
        .iter()
        .all(|p| p.state != pb::RolloutState::Running as i32 || p.next_stage_unix_ms > now_ms)
}

/// One batch of traffic through `clients`, on a blocking thread.
async fn batch(clients: &[Client], random: &mut Random, target_rate: f64) {
    let traffic = clients.to_vec();
    let mut r = Random(random.next());
    let seed = tokio::task::spawn_blocking(move || {
        let clients = traffic;
        let per_flag = CONTEXTS_PER_STAGE / BATCHES_PER_STAGE;
        for i in 0..PLANS {
            let (flag, event) = (flag_key(i), event_key(i));
            for n in 0..per_flag {
                let key = format!("user-{}", r.next() % KEYS);
                let ctx = Context::new(key.as_str());
                let client = &clients[n % clients.len()];
                let rate = if client.bool_value(&flag, &ctx, false) {
                    target_rate
                } else {
                    BASE_RATE
                };
                if r.chance(rate) {
                    client.track(&event, &ctx);
                }
            }
        }
        r.next()
    })
    .await
    .expect("traffic");
    random.0 ^= seed;
    for client in clients {
        client.flush_metrics().await.expect("metrics reported");
    }
}

/// Runs 200 guarded plans through two stages of traffic with the target tracking its events
/// at `target_rate`.
async fn simulate(target_rate: f64) -> Outcome {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (server, mut admin) = server_on(&clock).await;
    for i in 0..PLANS {
        create_flag(&mut admin, "production", boolean_flag(&flag_key(i))).await;
    }
    let stage = |percent, hold_ms| pb::RolloutStage { percent, hold_ms };
    for i in 0..PLANS {
        admin
            .start_rollout(pb::StartRolloutRequest {
                environment: "production".into(),
                flag: flag_key(i),
                target_variant: "on".into(),
                stages: vec![
                    stage(10_000, HOLD_MS),
                    stage(50_000, HOLD_MS),
                    stage(100_000, 0),
                ],
                guard: Some(pb::RolloutGuard {
                    event: event_key(i),
                    max_ratio: 1.5,
                    min_events: 100,
                }),
                ..Default::default()
            })
            .await
            .expect("plan started");
    }
    let token = sdk_token(&server, "simulation", "production").await;
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|n| sdk_client(server.endpoint(), &token, &format!("shop-{n}")))
        .collect();
    let mut random = Random(0x5eed_f1a9_57af_f00d);
    for stage_index in 0..2u32 {
        let revision = revision(&mut admin, "production").await;
        for client in &clients {
            client.wait_ready(PATIENCE).await.expect("ready");
            eventually("the stage's flags", async || {
                client.status().revision >= revision
            })
            .await;
            // The server names the guarded flags in its answer to a report: one before the
            // traffic, so that the first batch's events are attributed.
            client.flush_metrics().await.expect("metrics reported");
        }
        for n in 1..=BATCHES_PER_STAGE {
            batch(&clients, &mut random, target_rate).await;
            // The end of the first stage moves every plan still running to its second; the
            // end of the second would complete them, so the run stops short of it.
            if stage_index == 0 || n < BATCHES_PER_STAGE {
                let by = Duration::from_millis(HOLD_MS / BATCHES_PER_STAGE as u64);
                step(&clock, &mut admin, by).await;
            }
        }
    }
    let all = plans(&mut admin).await;
    assert_eq!(all.len(), PLANS);
    assert!(
        none_due(&all, clock.now_ms() as i64),
        "the run ends while no plan is due, so the scheduler has nothing left to change"
    );
    Outcome {
        rolled_back_after_ms: all
            .iter()
            .map(|p| {
                p.history
                    .iter()
                    .find(|e| e.kind == pb::RolloutEventKind::RolledBack as i32)
                    .map(|e| (e.time_unix_ms - p.created_unix_ms) as u64)
            })
            .collect(),
        stages: all.iter().map(|p| p.stage_index).collect(),
    }
}

fn median_minutes(times: &[u64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len() / 2)
        .map_or(0.0, |&ms| ms as f64 / 60_000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_equal_rates_fewer_than_5_percent_of_plans_roll_back() {
    let outcome = simulate(BASE_RATE).await;
    let times: Vec<u64> = outcome
        .rolled_back_after_ms
        .iter()
        .flatten()
        .copied()
        .collect();
    eprintln!(
        "equal rates: {} of {PLANS} plans rolled back ({:.1}%), median after {:.0} min",
        times.len(),
        100.0 * times.len() as f64 / PLANS as f64,
        median_minutes(&times)
    );
    assert!(
        times.len() * 20 < PLANS,
        "{} of {PLANS} plans rolled back by mistake",
        times.len()
    );
    let in_second_stage = outcome.stages.iter().filter(|&&s| s == 1).count();
    assert_eq!(
        in_second_stage + times.len(),
        PLANS,
        "every other plan ran on into its second stage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_three_times_worse_is_rolled_back_before_the_second_stage_ends() {
    let outcome = simulate(3.0 * BASE_RATE).await;
    let times: Vec<u64> = outcome
        .rolled_back_after_ms
        .iter()
        .flatten()
        .copied()
        .collect();
    let in_first = times.iter().filter(|&&t| t <= HOLD_MS).count();
    eprintln!(
        "target at 3x: {} of {PLANS} plans rolled back ({} in the first stage), median after \
         {:.0} min, slowest after {:.0} min",
        times.len(),
        in_first,
        median_minutes(&times),
        times.iter().max().map_or(0.0, |&ms| ms as f64 / 60_000.0)
    );
    assert_eq!(times.len(), PLANS, "every plan was rolled back");
    assert!(
        times.iter().all(|&t| t <= 2 * HOLD_MS),
        "every rollback came before the second stage ended"
    );
}
