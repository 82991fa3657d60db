//! `flag stale`: the flags ready to be removed from code.

use flagstaff_engine::Staleness;
use flagstaff_proto::pb;
use serde_json::{json, Value};

use crate::fetch::{list_flags, Listed};
use crate::output;
use crate::session::Session;

#[cfg(test)]
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Why `listed` is stale at `now_ms` after `days` days, if it is ([`flagstaff_engine::staleness`]:
/// a flag never evaluated counts from `created_ms`, its creation).
pub fn staleness(listed: &Listed, created_ms: i64, days: u64, now_ms: i64) -> Option<Staleness> {
    flagstaff_engine::staleness(
        &listed.flag,
        listed.change.time_unix_ms,
        listed.usage.last_evaluated_unix_ms,
        created_ms,
        days,
        now_ms,
    )
}

/// `flagstaff flag stale [--days N]`.
pub async fn stale(session: &mut Session, days: u64) -> anyhow::Result<String> {
    let now_ms = output::now_ms();
    let flags = list_flags(session, None, None).await?;
    let mut stale: Vec<(&Listed, Staleness)> = Vec::new();
    // Flags no SDK ever evaluated, but created less than `days` ago: not stale yet.
    let mut young: Vec<&str> = Vec::new();
    for listed in &flags {
        // Only a flag never evaluated needs its creation time (from its history).
        let created_ms = if listed.usage.last_evaluated_unix_ms == 0 {
            created(session, &listed.flag.key)
                .await?
                .unwrap_or(listed.change.time_unix_ms)
        } else {
            listed.change.time_unix_ms
        };
        match staleness(listed, created_ms, days, now_ms) {
            Some(why) => stale.push((listed, why)),
            None if listed.usage.last_evaluated_unix_ms == 0 => young.push(&listed.flag.key),
            None => {}
        }
    }
    let document = Value::Array(
        stale
            .iter()
            .map(|(l, why)| {
                let (reason, variant, since) = match why {
                    Staleness::OneVariant { variant, since_ms } => {
                        ("one_variant", Some(variant.as_str()), *since_ms)
                    }
                    Staleness::NotEvaluated { since_ms, .. } => ("not_evaluated", None, *since_ms),
                };
                json!({
                    "key": l.flag.key,
                    "temporary": l.flag.temporary,
                    "reason": reason,
                    "variant": variant,
                    "since_unix_ms": since,
                    "evaluations": l.usage.evaluations,
                })
            })
            .collect(),
    );
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    if stale.is_empty() {
        let mut text = format!(
            "no stale flags: every temporary flag serves more than one variant or changed in \
             the last {days} days, and every flag was evaluated in the last {days} days"
        );
        if !young.is_empty() {
            text.push_str(&format!(
                " or created in them (never evaluated yet: {})",
                young.join(", ")
            ));
        }
        text.push('\n');
        return Ok(text);
    }
    let rows: Vec<Vec<String>> = stale
        .iter()
        .map(|(l, why)| {
            let (reason, since) = match why {
                Staleness::OneVariant { variant, since_ms } => {
                    (format!("serves {variant} to everyone"), *since_ms)
                }
                Staleness::NotEvaluated { since_ms, ever } => (
                    if *ever {
                        "not evaluated".to_owned()
                    } else {
                        "never evaluated".to_owned()
                    },
                    *since_ms,
                ),
            };
            vec![
                l.flag.key.clone(),
                if l.flag.temporary {
                    "temporary"
                } else {
                    "permanent"
                }
                .to_owned(),
                reason,
                output::timestamp(since),
            ]
        })
        .collect();
    Ok(output::table(&["FLAG", "LIFETIME", "WHY", "SINCE"], &rows))
}

/// When flag `key` was created: the time of the newest history entry that created it (a flag
/// deleted and created again counts from its last creation), else of its oldest entry the
/// server keeps; `None` when it keeps none.
async fn created(session: &mut Session, key: &str) -> anyhow::Result<Option<i64>> {
    let environment = session.env()?;
    let mut oldest = None;
    let mut page_token = String::new();
    loop {
        let page = session
            .admin
            .list_history(pb::ListHistoryRequest {
                environment: environment.clone(),
                flag: key.to_owned(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(|s| session.error(s))?
            .into_inner();
        match creation(&page.entries, key) {
            Found::Created(time) => return Ok(Some(time)),
            Found::Oldest(time) => oldest = time.or(oldest),
        }
        if page.next_page_token.is_empty() {
            return Ok(oldest);
        }
        page_token = page.next_page_token;
    }
}

/// What a page of a flag's history, newest first, says of its creation.
#[derive(Debug, PartialEq)]
enum Found {
    /// The time of the newest entry that created the flag.
    Created(i64),
    /// No creation on the page: the time of its oldest entry, if any.
    Oldest(Option<i64>),
}

fn creation(entries: &[pb::AuditEntry], key: &str) -> Found {
    for entry in entries {
        let creates = entry.changes.iter().any(|c| {
            matches!(&c.document, Some(pb::change::Document::Flag(f))
                if f.key == key && f.before.is_none() && f.after.is_some())
        });
        if creates {
            return Found::Created(entry.time_unix_ms);
        }
    }
    Found::Oldest(entries.last().map(|e| e.time_unix_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flagstaff_engine::Flag;
    use flagstaff_proto::pb;

    #[test]
    fn a_flag_created_again_counts_from_its_last_creation() {
        let entry = |time: i64, before: bool, after: bool| pb::AuditEntry {
            time_unix_ms: time,
            changes: vec![pb::Change {
                document: Some(pb::change::Document::Flag(pb::FlagChange {
                    key: "f".into(),
                    before: before.then(pb::Flag::default),
                    after: after.then(pb::Flag::default),
                })),
            }],
            ..Default::default()
        };
        // Newest first: edited, created again, deleted, created.
        let history = [
            entry(40, true, true),
            entry(30, false, true),
            entry(20, true, false),
            entry(10, false, true),
        ];
        assert_eq!(creation(&history, "f"), Found::Created(30));
        assert_eq!(creation(&history[..1], "f"), Found::Oldest(Some(40)));
        assert_eq!(creation(&[], "f"), Found::Oldest(None));
    }

    fn flag(yaml: &str) -> Flag {
        let text = format!(
            "key: f\nkind: boolean\nvariants: {{on: true, off: false}}\noff_variant: off\n{yaml}"
        );
        let value = flagstaff_engine::parse_value(&text).expect("YAML");
        flagstaff_engine::flag_from_value(&value).expect("a flag")
    }

    fn listed(flag: Flag, changed_ms: i64, evaluated_ms: i64) -> Listed {
        Listed {
            flag,
            change: pb::ChangeInfo {
                time_unix_ms: changed_ms,
                ..Default::default()
            },
            usage: pb::FlagUsage {
                evaluations: u64::from(evaluated_ms != 0),
                last_evaluated_unix_ms: evaluated_ms,
            },
        }
    }

    /// [`staleness`] of a flag created at its last change.
    fn check(listed: &Listed, days: u64, now: i64) -> Option<Staleness> {
        staleness(listed, listed.change.time_unix_ms, days, now)
    }

    #[test]
    fn temporary_flags_serving_one_variant_long_enough_are_stale() {
        let now = 100 * DAY_MS;
        let mut f = flag("enabled: true\ndefault: {variant: on}\ntemporary: true");
        let recent = now - DAY_MS;
        assert_eq!(
            check(&listed(f.clone(), now - 31 * DAY_MS, recent), 30, now),
            Some(Staleness::OneVariant {
                variant: "on".to_owned(),
                since_ms: now - 31 * DAY_MS
            })
        );
        // Changed 29 days ago: not yet.
        assert_eq!(
            check(&listed(f.clone(), now - 29 * DAY_MS, recent), 30, now),
            None
        );
        // A permanent flag serving one variant is an ops flag: kept.
        f.temporary = false;
        assert_eq!(check(&listed(f, now - 31 * DAY_MS, recent), 30, now), None);
    }

    #[test]
    fn flags_nobody_evaluates_are_stale() {
        let now = 100 * DAY_MS;
        let split = flag(
            "enabled: true\ndefault: {split: {bucket_by: key, weights: [{variant: on, weight: 50000}, {variant: off, weight: 50000}]}}",
        );
        assert_eq!(
            check(
                &listed(split.clone(), now - 90 * DAY_MS, now - 8 * DAY_MS),
                7,
                now
            ),
            Some(Staleness::NotEvaluated {
                since_ms: now - 8 * DAY_MS,
                ever: true
            })
        );
        assert_eq!(
            check(
                &listed(split.clone(), now - 90 * DAY_MS, now - 6 * DAY_MS),
                7,
                now
            ),
            None
        );
        // Never evaluated: stale once it has gone unchanged that long.
        assert_eq!(
            check(&listed(split.clone(), now - 8 * DAY_MS, 0), 7, now),
            Some(Staleness::NotEvaluated {
                since_ms: now - 8 * DAY_MS,
                ever: false
            })
        );
        assert_eq!(
            check(&listed(split.clone(), now - 6 * DAY_MS, 0), 7, now),
            None
        );
        // Never evaluated since its creation, though changed since: stale, since its creation.
        let changed = listed(split.clone(), now - 2 * DAY_MS, 0);
        assert_eq!(
            staleness(&changed, now - 40 * DAY_MS, 30, now),
            Some(Staleness::NotEvaluated {
                since_ms: now - 40 * DAY_MS,
                ever: false
            })
        );
        // More days than time has: nothing is that old.
        assert_eq!(check(&listed(split, 1, 0), u64::MAX, now), None);
    }
}
