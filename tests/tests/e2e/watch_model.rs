//! The Watch stream's model test: concurrent writers; watchers that disconnect at random and
//! resume from the last revision they applied; a change log short enough to be trimmed while
//! some are away; a restart on the same data directory; a move to a fresh one (a new epoch).
//!
//! Checked: every watcher ends holding exactly the server's documents (compared field by
//! field, versions included); every resume inside the retained log is served without a
//! snapshot and every resume outside it with one (both counted); no revision of an epoch is
//! ever applied twice.

use std::collections::BTreeSet;
use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_server::storage::Backend;
use flagstaff_server::Environments;
use flagstaff_tests::watcher::{subscribe, State, Watcher};
use flagstaff_tests::{Admin, TestServer, TestServerBuilder};
use futures_util::future::join_all;
use tokio::sync::watch;

use super::fixtures::*;

const WATCHERS: usize = 4;
const WRITES_PER_WRITER: usize = 40;
/// Short, so that watchers away for a while fall out of it.
const RETENTION: u64 = 25;
/// Shorter still, so that resumes are served from the stored log too.
const FEED: usize = 8;
/// Revisions the concurrent writers may commit between a watcher reading the head and the
/// server serving its resume: resumes this close to the edge of the log are not classified.
const MARGIN: u64 = 12;
const LIMIT: Duration = Duration::from_secs(30);

/// A small deterministic generator, so a failure replays the same operations.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one watcher saw over the whole test.
#[derive(Debug, Default)]
struct Log {
    /// Resumes the log held, and how many of them got a snapshot.
    inside: usize,
    inside_with_snapshot: usize,
    /// Resumes the log no longer held, and how many got a snapshot.
    outside: usize,
    outside_with_snapshot: usize,
    /// Subscriptions from revision 0 or another epoch, and how many got a snapshot.
    fresh: usize,
    fresh_with_snapshot: usize,
    /// (epoch, revision) of every delta applied.
    applied: Vec<(String, u64)>,
}

fn settings() -> TestServerBuilder {
    TestServer::builder()
        .retention(RETENTION)
        .feed_capacity(FEED)
}

pub(super) async fn prepare(server: &TestServer) -> String {
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_segment(
        &mut admin,
        "production",
        segment("beta", &["u1", "u2", "u3"]),
    )
    .await;
    for i in 0..4 {
        create_flag(&mut admin, "production", boolean_flag(&format!("f{i}"))).await;
    }
    create_flag(&mut admin, "production", targeting("t", "beta")).await;
    sdk_token(server, "model-sdk", "production").await
}

pub(super) fn server_state(envs: &Environments<Backend>) -> State {
    let env = envs.get("production").expect("environment");
    let current = env.current();
    State::of(&env.epoch, current.revision, &current.snapshot)
}

/// One random write: a switch, an edit, a creation or deletion, a key patch, or an apply of
/// several documents in one revision.
pub(super) async fn write(admin: &mut Admin, rng: &mut Rng, writer: usize, n: usize) {
    let env = || "production".to_owned();
    let key = format!("f{}", rng.below(4));
    let result = match rng.below(6) {
        0 => admin
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: env(),
                key,
                enabled: rng.below(2) == 0,
                ..Default::default()
            })
            .await
            .map(drop),
        1 => {
            let mut flag = boolean_flag(&key);
            flag.description = Some(format!("edited by {writer} at {n}"));
            admin
                .update_flag(pb::UpdateFlagRequest {
                    environment: env(),
                    flag: Some(flag),
                    ..Default::default()
                })
                .await
                .map(drop)
        }
        2 => admin
            .create_flag(pb::CreateFlagRequest {
                environment: env(),
                flag: Some(boolean_flag(&format!("w{writer}-{n}"))),
                ..Default::default()
            })
            .await
            .map(drop),
        3 if n > 0 => admin
            .delete_flag(pb::DeleteFlagRequest {
                environment: env(),
                key: format!("w{writer}-{}", rng.below(n as u64)),
                ..Default::default()
            })
            .await
            .map(drop),
        4 => {
            let user = format!("u{}", rng.below(30));
            let (add, remove) = if rng.below(2) == 0 {
                (vec![user], vec![])
            } else {
                (vec![], vec![user])
            };
            admin
                .patch_segment_keys(pb::PatchSegmentKeysRequest {
                    environment: env(),
                    patch: Some(pb::SegmentKeyPatch {
                        segment: "beta".into(),
                        add_included: add,
                        remove_included: remove,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .map(drop)
        }
        _ => {
            let mut a = boolean_flag(&format!("pair-{writer}-a"));
            let mut b = boolean_flag(&format!("pair-{writer}-b"));
            a.description = Some(format!("{n}"));
            b.description = Some(format!("{n}"));
            admin
                .apply(pb::ApplyRequest {
                    environment: env(),
                    source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                        flags: vec![a, b],
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .await
                .map(drop)
        }
    };
    // Deleting a flag already deleted (or never created) is the only refusal expected.
    if let Err(status) = result {
        assert_eq!(status.code(), tonic::Code::NotFound, "{}", status.message());
    }
}

/// Watches with random disconnections until `stop`, resuming from what it holds each time.
async fn roam(
    server: &TestServer,
    token: &str,
    id: usize,
    mut held: State,
    mut stop: watch::Receiver<bool>,
    log: &mut Log,
) -> State {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    loop {
        let (watcher, class) = reconnect(server, token, id, held.clone()).await;
        let mut watcher = watcher;
        for _ in 0..=rng.below(12) {
            match tokio::time::timeout(Duration::from_millis(100), watcher.step()).await {
                Ok(Ok(Some(()))) => {}
                Ok(Err(status)) => panic!("watcher {id}: {status}"),
                _ => break,
            }
        }
        record(log, &watcher, class);
        held = watcher.state.clone();
        drop(watcher);
        if *stop.borrow_and_update() {
            return held;
        }
        // Real time, a random pause: the writers keep going meanwhile, and this jitter is
        // what varies where a watcher's resume lands against the feed and the log.
        tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
    }
}

/// Where a resume stands against the retained log, judged just before subscribing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Revision 0 or another epoch: a snapshot is due anyway.
    Fresh,
    Inside,
    Outside,
    /// Too close to the edge to tell with writers running.
    Edge,
}

async fn reconnect(server: &TestServer, token: &str, id: usize, held: State) -> (Watcher, Class) {
    let now = server_state(&server.environments);
    let oldest_kept = now.revision.saturating_sub(RETENTION) + 1;
    let class = if held.revision == 0 || held.epoch != now.epoch {
        Class::Fresh
    } else if held.revision + 1 >= oldest_kept + MARGIN {
        Class::Inside
    } else if held.revision + 1 < oldest_kept {
        Class::Outside
    } else {
        Class::Edge
    };
    let mut sync = server.sync_with(token).await;
    let watcher = Watcher::open(&mut sync, subscribe(&format!("w{id}"), "", &held), held)
        .await
        .expect("the stream opens");
    (watcher, class)
}

fn record(log: &mut Log, watcher: &Watcher, class: Class) {
    // A connection dropped before its first update says nothing about how it was served.
    let Some(snapshot) = watcher.received.first_was_snapshot else {
        return;
    };
    match class {
        Class::Inside => {
            log.inside += 1;
            log.inside_with_snapshot += usize::from(snapshot);
        }
        Class::Outside => {
            log.outside += 1;
            log.outside_with_snapshot += usize::from(snapshot);
        }
        Class::Fresh => {
            log.fresh += 1;
            log.fresh_with_snapshot += usize::from(snapshot);
        }
        Class::Edge => {}
    }
    log.applied.extend(
        watcher
            .received
            .deltas
            .iter()
            .map(|r| (watcher.state.epoch.clone(), *r)),
    );
}

/// Runs writers and roaming watchers together; returns what each watcher holds.
async fn phase(
    server: &TestServer,
    token: &str,
    held: Vec<State>,
    logs: &mut [Log],
    seed: u64,
) -> Vec<State> {
    let (stop, stopping) = watch::channel(false);
    let writers = async {
        let mut tasks = Vec::new();
        for writer in 0..2 {
            let mut admin = server.admin().await;
            tasks.push(async move {
                let mut rng = Rng(seed + writer as u64 * 7919);
                // Writer names differ from phase to phase, so creations never collide.
                let name = seed as usize * 10 + writer;
                for n in 0..WRITES_PER_WRITER {
                    write(&mut admin, &mut rng, name, n).await;
                }
            });
        }
        join_all(tasks).await;
        stop.send_replace(true);
    };
    let watchers = join_all(
        held.into_iter()
            .zip(logs.iter_mut())
            .enumerate()
            .map(|(id, (state, log))| roam(server, token, id, state, stopping.clone(), log)),
    );
    let ((), held) = tokio::join!(writers, watchers);
    held
}

/// Brings every watcher to the server's state and compares contents.
async fn settle(
    server: &TestServer,
    token: &str,
    held: Vec<State>,
    logs: &mut [Log],
) -> Vec<State> {
    let target = server_state(&server.environments);
    let mut settled = Vec::new();
    for (id, (state, log)) in held.into_iter().zip(logs.iter_mut()).enumerate() {
        let (mut watcher, class) = reconnect(server, token, id, state.clone()).await;
        watcher.until(target.revision, LIMIT).await;
        record(log, &watcher, class);
        assert_eq!(
            watcher.state, target,
            "watcher {id} differs from the server"
        );
        settled.push(watcher.state.clone());
    }
    settled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_always_end_with_the_servers_state() {
    let server = settings().start().await;
    let token = prepare(&server).await;
    let mut logs: Vec<Log> = (0..WATCHERS).map(|_| Log::default()).collect();
    let held = vec![State::default(); WATCHERS];

    // 1. Writers and roaming watchers together.
    let held = phase(&server, &token, held, &mut logs, 1).await;
    let held = settle(&server, &token, held, &mut logs).await;

    // 2. While every watcher is away: a few writes (inside the log), a restart on the same
    //    data directory (same epoch; the feed starts empty, so resumes come from the store).
    let mut admin = server.admin().await;
    let mut rng = Rng(77);
    for n in 0..5 {
        write(&mut admin, &mut rng, 9, n).await;
    }
    let epoch = server_state(&server.environments).epoch;
    let server = settings().data_dir(server.stop().await).start().await;
    assert_eq!(server_state(&server.environments).epoch, epoch);
    let before = logs
        .iter()
        .map(|l| l.inside_with_snapshot + l.outside_with_snapshot)
        .sum::<usize>();
    let held = settle(&server, &token, held, &mut logs).await;
    let after = logs
        .iter()
        .map(|l| l.inside_with_snapshot + l.outside_with_snapshot)
        .sum::<usize>();
    assert_eq!(before, after, "resumes after a restart need no snapshot");

    // 3. More writers and roamers; then a long absence: the log is trimmed past them.
    let held = phase(&server, &token, held, &mut logs, 2).await;
    let held = settle(&server, &token, held, &mut logs).await;
    let mut admin = server.admin().await;
    for n in 0..(RETENTION as usize + 5) {
        admin
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: "production".into(),
                key: "f0".into(),
                enabled: n % 2 == 0,
                ..Default::default()
            })
            .await
            .expect("switched");
    }
    let held = settle(&server, &token, held, &mut logs).await;

    // 4. A fresh data directory: a new epoch; every watcher gets a snapshot.
    drop(server);
    let fresh = settings().start().await;
    let token = prepare(&fresh).await;
    assert_ne!(server_state(&fresh.environments).epoch, epoch);
    let mut fresh_logs: Vec<Log> = (0..WATCHERS).map(|_| Log::default()).collect();
    let held = settle(&fresh, &token, held, &mut fresh_logs).await;
    assert!(fresh_logs
        .iter()
        .all(|l| l.fresh == 1 && l.fresh_with_snapshot == 1));
    let held = phase(&fresh, &token, held, &mut fresh_logs, 3).await;
    settle(&fresh, &token, held, &mut fresh_logs).await;

    let all: Vec<&Log> = logs.iter().chain(&fresh_logs).collect();
    let inside: usize = all.iter().map(|l| l.inside).sum();
    let outside: usize = all.iter().map(|l| l.outside).sum();
    eprintln!("resumes inside the log: {inside}, outside: {outside}");
    assert!(
        inside >= 20,
        "too few resumes inside the log to mean anything: {inside}"
    );
    assert!(
        outside >= WATCHERS,
        "the trimmed log must be exercised: {outside}"
    );
    assert_eq!(all.iter().map(|l| l.inside_with_snapshot).sum::<usize>(), 0);
    assert_eq!(
        all.iter().map(|l| l.outside_with_snapshot).sum::<usize>(),
        outside
    );
    assert_eq!(
        all.iter().map(|l| l.fresh_with_snapshot).sum::<usize>(),
        all.iter().map(|l| l.fresh).sum::<usize>()
    );
    for (id, log) in all.iter().enumerate() {
        let unique: BTreeSet<&(String, u64)> = log.applied.iter().collect();
        assert_eq!(
            unique.len(),
            log.applied.len(),
            "watcher {id} applied a revision twice"
        );
    }
}
