//! Usage metrics of a client without a server: it counts, and has nothing to flush. The
//! reports to the real server are tested end to end in the workspace's `tests/`
//! (`tests/tests/e2e/metrics.rs`).

use flagstaff::{Client, Context};

const DOC: &str = r#"
environment: test
flags:
  - key: checkout-v2
    kind: boolean
    version: 4
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: true
    rules:
      - id: eu
        conditions: [{ attribute: country, op: in, values: [NL] }]
        serve: { variant: "on" }
    default: { variant: "off" }
"#;

#[tokio::test]
async fn a_client_without_a_server_counts_but_has_nothing_to_flush() {
    let client = Client::from_export_text(DOC).expect("valid");
    client.bool_value("checkout-v2", &Context::new("a"), false);
    client.track("checkout_error", &Context::new("a"));
    client.flush_metrics().await.expect("nothing to report to");
    assert_eq!(client.stats().metrics_reports, 0);
}
