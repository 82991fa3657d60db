//! How an evaluation reads in OpenFeature's terms: the one mapping that both the OFREP
//! endpoints of flagstaffd and the SDK's OpenFeature provider use (DESIGN.md section 10), so
//! that a remote and a local evaluation of the same flag report the same reason.
//!
//! | Flagstaff | OpenFeature reason | flag metadata |
//! |---|---|---|
//! | the flag is off | `DISABLED` | |
//! | a split served it (from a rule or the default) | `SPLIT` | `ruleId` (from a rule), `bucket` |
//! | a rule served a fixed variant | `TARGETING_MATCH` | `ruleId` |
//! | a prerequisite failed: the off variant | `TARGETING_MATCH` | `prerequisite` |
//! | the default served a fixed variant | `DEFAULT` | |
//! | an error served the off variant (a split's bucketing attribute is missing) | `ERROR` | `errorCode` (the engine's name) |
//!
//! OFREP 0.3.0 lists `STATIC`, `TARGETING_MATCH`, `SPLIT`, `DISABLED` and `UNKNOWN`;
//! OpenFeature's `DEFAULT` and `ERROR` are not listed there, but OFREP providers accept every
//! OpenFeature reason. No other reason string is ever produced: providers reject unknown ones.

use crate::eval::{Detail, ErrorKind, Reason};

/// An OpenFeature resolution reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpenFeatureReason {
    /// The flag is disabled.
    Disabled,
    /// A rule served a fixed variant, or a failed prerequisite served the off variant.
    TargetingMatch,
    /// A percentage split decided the variant.
    Split,
    /// The flag's default served a fixed variant.
    Default,
    /// Evaluation met an error; the flag's off variant (or the caller's default) was served.
    Error,
}

impl OpenFeatureReason {
    /// The reason as OpenFeature spells it, e.g. `TARGETING_MATCH`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenFeatureReason::Disabled => "DISABLED",
            OpenFeatureReason::TargetingMatch => "TARGETING_MATCH",
            OpenFeatureReason::Split => "SPLIT",
            OpenFeatureReason::Default => "DEFAULT",
            OpenFeatureReason::Error => "ERROR",
        }
    }
}

/// What OpenFeature reports about one evaluation: the reason and the flag metadata that
/// explains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFeatureOutcome<'a> {
    /// The reason.
    pub reason: OpenFeatureReason,
    /// The id of the rule that served, reported as `ruleId`.
    pub rule_id: Option<&'a str>,
    /// The bucket of the split that served, reported as `bucket`.
    pub bucket: Option<u32>,
    /// The prerequisite flag that failed, reported as `prerequisite`.
    pub prerequisite: Option<&'a str>,
    /// The error met, reported as `errorCode` with [`ErrorKind::as_str`].
    pub error: Option<ErrorKind>,
}

impl<'a> OpenFeatureOutcome<'a> {
    /// The outcome of `detail`.
    pub fn of<T>(detail: &Detail<'a, T>) -> OpenFeatureOutcome<'a> {
        let mut outcome = OpenFeatureOutcome {
            reason: OpenFeatureReason::Default,
            rule_id: None,
            bucket: detail.bucket,
            prerequisite: None,
            error: None,
        };
        outcome.reason = match detail.reason {
            Reason::Off => OpenFeatureReason::Disabled,
            Reason::RuleMatch { id, .. } => {
                outcome.rule_id = Some(id);
                if detail.bucket.is_some() {
                    OpenFeatureReason::Split
                } else {
                    OpenFeatureReason::TargetingMatch
                }
            }
            Reason::Default if detail.bucket.is_some() => OpenFeatureReason::Split,
            Reason::Default => OpenFeatureReason::Default,
            Reason::PrerequisiteFailed { prerequisite } => {
                outcome.prerequisite = Some(prerequisite);
                OpenFeatureReason::TargetingMatch
            }
            Reason::Error(kind) => {
                outcome.error = Some(kind);
                OpenFeatureReason::Error
            }
        };
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, Snapshot};

    const FLAGS: &str = r#"
environment: test
flags:
  - key: base
    kind: boolean
    variants: { on: true, off: false }
    off_variant: off
    enabled: true
    rules:
      - id: staff
        conditions: [{ attribute: staff, op: in, values: [true] }]
        serve: { variant: on }
      - id: beta
        conditions: [{ attribute: beta, op: in, values: [true] }]
        serve: { split: { weights: [{ variant: on, weight: 50000 }, { variant: off, weight: 50000 }] } }
    default: { variant: off }
  - key: halves
    kind: boolean
    variants: { on: true, off: false }
    off_variant: off
    enabled: true
    rules: []
    default: { split: { bucket_by: team, weights: [{ variant: on, weight: 50000 }, { variant: off, weight: 50000 }] } }
  - key: disabled
    kind: boolean
    variants: { on: true, off: false }
    off_variant: off
    enabled: false
    rules: []
    default: { variant: on }
  - key: gated
    kind: boolean
    variants: { on: true, off: false }
    off_variant: off
    enabled: true
    prerequisites: [{ flag: disabled, variants: [on] }]
    rules: []
    default: { variant: on }
"#;

    fn outcome(snapshot: &Snapshot, key: &str, ctx: &Context<'_>) -> String {
        let detail = snapshot.evaluate(key, ctx);
        let o = OpenFeatureOutcome::of(&detail);
        format!(
            "{} rule={:?} bucket={} prerequisite={:?} error={:?}",
            o.reason.as_str(),
            o.rule_id,
            o.bucket.is_some(),
            o.prerequisite,
            o.error.map(ErrorKind::as_str)
        )
    }

    #[test]
    fn every_reason_maps_to_one_openfeature_reason_and_its_metadata() {
        let snapshot = Snapshot::from_text(FLAGS).expect("valid");
        let user = Context::new("u1");
        assert_eq!(
            outcome(&snapshot, "base", &Context::new("u1").with("staff", true)),
            "TARGETING_MATCH rule=Some(\"staff\") bucket=false prerequisite=None error=None"
        );
        assert_eq!(
            outcome(&snapshot, "base", &Context::new("u1").with("beta", true)),
            "SPLIT rule=Some(\"beta\") bucket=true prerequisite=None error=None"
        );
        assert_eq!(
            outcome(&snapshot, "base", &user),
            "DEFAULT rule=None bucket=false prerequisite=None error=None"
        );
        assert_eq!(
            outcome(&snapshot, "halves", &Context::new("u1").with("team", "a")),
            "SPLIT rule=None bucket=true prerequisite=None error=None"
        );
        assert_eq!(
            outcome(&snapshot, "halves", &user),
            "ERROR rule=None bucket=false prerequisite=None error=Some(\"MISSING_BUCKETING_ATTRIBUTE\")"
        );
        assert_eq!(
            outcome(&snapshot, "disabled", &user),
            "DISABLED rule=None bucket=false prerequisite=None error=None"
        );
        assert_eq!(
            outcome(&snapshot, "gated", &user),
            "TARGETING_MATCH rule=None bucket=false prerequisite=Some(\"disabled\") error=None"
        );
        assert_eq!(
            outcome(&snapshot, "missing", &user),
            "ERROR rule=None bucket=false prerequisite=None error=Some(\"FLAG_NOT_FOUND\")"
        );
    }
}
