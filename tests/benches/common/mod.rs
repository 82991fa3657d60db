//! What the benchmarks share: their flag, their percentiles, and SDK clients that watch.

use std::time::Duration;

use flagstaff_proto::pb;

/// A boolean flag `key`, on and serving `on`.
pub fn flag(key: &str) -> pb::Flag {
    let flag = flagstaff_engine::flag_from_value(&serde_json::json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "on"},
    }))
    .expect("flag");
    pb::Flag::from(&flag)
}

/// p50 and p99 of `samples`.
pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

/// `n` SDK clients of `application` on `endpoint` with `sdk`, each holding its snapshot.
pub async fn watching(
    endpoint: String,
    sdk: &str,
    n: usize,
    application: &str,
) -> Vec<flagstaff::Client> {
    let clients: Vec<flagstaff::Client> = (0..n)
        .map(|_| {
            flagstaff::Client::builder(endpoint.clone(), sdk.to_owned())
                .application(application)
                .build()
                .expect("client")
        })
        .collect();
    for client in &clients {
        client
            .wait_ready(Duration::from_secs(120))
            .await
            .expect("every client gets its snapshot");
    }
    clients
}
