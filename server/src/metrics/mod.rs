//! The server's own metrics, in the Prometheus text format (version 0.0.4), served by
//! [`endpoint`] at `GET /metrics` when flagstaffd is given `--metrics-listen`.
//!
//! Nothing here is on a write's or a request's critical path beyond one atomic add: writes
//! are counted by each [`Environment`](crate::Environment) itself (an atomic in the
//! environments module, which knows nothing of HTTP or Prometheus), gRPC requests by
//! [`requests::CountRequestsLayer`] in counters fixed when the server starts, and the
//! gauges (revision, flags) are read from the environments' current snapshots when scraped.
//! Token lookups are counted by [`Tokens`] itself.

pub(crate) mod endpoint;
pub(crate) mod requests;

use std::fmt::Write as _;

use crate::auth::Tokens;
use crate::clients::Clients;
use crate::environments::Environments;
use crate::storage::Store;

pub(crate) use requests::{CountRequestsLayer, RequestCounts};

/// Renders every metric as of now.
pub(crate) fn render<S: Store>(
    envs: &Environments<S>,
    requests: &RequestCounts,
    clients: &Clients,
    tokens: &Tokens<S>,
) -> String {
    let damaged = envs.damaged();
    let leads = envs.leads();
    let envs = envs.list();
    let mut out = Exposition::default();

    out.family(
        "flagstaff_leader",
        "gauge",
        "1 while this flagstaffd holds the leader's lease and so runs the exactly-one duties \
         (the rollout scheduler, guard decisions); 0 while another flagstaffd on the database \
         does. Always 1 on sled.",
    );
    out.sample("flagstaff_leader", &[], u64::from(leads));

    out.family(
        "flagstaff_environment_damaged",
        "gauge",
        "1 for an environment not served because a stored record of it could not be read at \
         start (`flagstaffd check` lists them, `flagstaffd repair` restores them); listed only \
         for such environments.",
    );
    for key in damaged.keys() {
        out.sample("flagstaff_environment_damaged", &[("environment", key)], 1);
    }

    out.family(
        "flagstaff_writes_total",
        "counter",
        "Changes committed to the environment since this server started: each is one \
         revision, durable before it was acknowledged. Writes that changed nothing or failed \
         are not counted.",
    );
    for env in &envs {
        out.sample(
            "flagstaff_writes_total",
            &[("environment", &env.key)],
            env.writes(),
        );
    }

    out.family(
        "flagstaff_environment_revision",
        "gauge",
        "The environment's current revision.",
    );
    for env in &envs {
        out.sample(
            "flagstaff_environment_revision",
            &[("environment", &env.key)],
            env.current().revision,
        );
    }

    out.family("flagstaff_flags", "gauge", "Flags in the environment.");
    for env in &envs {
        out.sample(
            "flagstaff_flags",
            &[("environment", &env.key)],
            env.current().snapshot.len() as u64,
        );
    }

    out.family(
        "flagstaff_connected_sdks",
        "gauge",
        "SDK instances with an open Watch stream to the environment.",
    );
    for env in &envs {
        out.sample(
            "flagstaff_connected_sdks",
            &[("environment", &env.key)],
            clients.connected(&env.key) as u64,
        );
    }

    out.family(
        "flagstaff_grpc_requests_total",
        "counter",
        "gRPC requests answered, by method (package.Service/Method, or \"unknown\" for a \
         method this server does not know) and status code (OK, NOT_FOUND, ...). A call \
         abandoned before its status was sent counts as CANCELLED.",
    );
    for (method, code, count) in requests.counts() {
        out.sample(
            "flagstaff_grpc_requests_total",
            &[("method", method), ("code", code)],
            count,
        );
    }

    out.family(
        "flagstaff_token_lookups_total",
        "counter",
        "Tokens this server had not heard of, looked up in the database it shares with other \
         servers, by outcome: found (revoked or not), unknown and failed asked the database; \
         recently_unknown (it did not hold the token a moment ago) and busy (too many lookups \
         at once or this second) were refused without asking it. Only outcomes that \
         happened are listed; none on sled.",
    );
    if let Some(counts) = tokens.lookup_counts() {
        for (outcome, count) in [
            ("found", counts.found),
            ("unknown", counts.unknown),
            ("failed", counts.failed),
            ("recently_unknown", counts.recently_unknown),
            ("busy", counts.busy),
        ] {
            if count == 0 {
                continue;
            }
            out.sample(
                "flagstaff_token_lookups_total",
                &[("outcome", outcome)],
                count,
            );
        }
    }

    out.text
}

/// The text format, line by line.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape(value, true));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// Escapes HELP text (backslash, newline) or a label value (also the double quote).
fn escape(text: &str, label_value: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label_value => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = Exposition::default();
        out.family("m", "gauge", "a \\ b\nc \"d\"");
        out.sample("m", &[("l", "x\"y\\z\nw"), ("k", "v")], 7);
        out.sample("n", &[], 0);
        assert_eq!(
            out.text,
            "# HELP m a \\\\ b\\nc \"d\"\n# TYPE m gauge\nm{l=\"x\\\"y\\\\z\\nw\",k=\"v\"} 7\nn 0\n"
        );
    }
}
