//! An [OpenFeature](https://openfeature.dev) provider over a [`Client`], for services that
//! evaluate flags through the `open-feature` crate's API (cargo feature `openfeature`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use flagstaff::openfeature::FlagstaffProvider;
//! use open_feature::{EvaluationContext, OpenFeature};
//!
//! let client = flagstaff::Client::builder("http://127.0.0.1:7878", "fs_sdk_...")
//!     .application("checkout-service")
//!     .build()?;
//! let mut api = OpenFeature::singleton_mut().await;
//! api.set_provider(FlagstaffProvider::new(client)).await; // waits until ready, up to 5 s
//! let flags = api.create_client();
//!
//! let ctx = EvaluationContext::default()
//!     .with_targeting_key("user-42")
//!     .with_custom_field("country", "NL");
//! let enabled = flags.get_bool_value("checkout-v2", Some(&ctx), None).await.unwrap_or(false);
//! # let _ = enabled; Ok(()) }
//! ```
//!
//! How Flagstaff maps onto OpenFeature:
//!
//! - Context: `targetingKey` is the context key; every custom field is an attribute of the same
//!   name (integers and floats as numbers, date-times as Unix milliseconds, which date
//!   conditions accept). Struct fields have no Flagstaff equivalent and are ignored.
//! - Types: boolean, string and JSON flags resolve as `bool`, `String` and struct values;
//!   number flags as `f64`, and as `i64` when the value is a whole number in range (else
//!   `TYPE_MISMATCH`). A JSON flag whose value is not an object is a `TYPE_MISMATCH` for
//!   struct resolution.
//! - Reasons and flag metadata are those of flagstaffd's OFREP endpoints (one mapping,
//!   [`flagstaff_engine::OpenFeatureOutcome`]): a disabled flag is `DISABLED`; a split decided
//!   it, `SPLIT` (with `bucket`); a matching rule, `TARGETING_MATCH` (with `ruleId`); no rule
//!   matched, `DEFAULT`; a failed prerequisite, `TARGETING_MATCH` with `prerequisite` naming
//!   it. The flag's version is in the metadata as `version`.
//! - Errors: a missing flag is `FLAG_NOT_FOUND`, the wrong type `TYPE_MISMATCH`, no data yet
//!   `PROVIDER_NOT_READY`; OpenFeature then serves the caller's default. A split whose
//!   bucketing attribute is missing is different: Flagstaff serves the flag's off variant, and
//!   so does the provider, with reason `ERROR` and, in the flag metadata, `errorCode`
//!   `MISSING_BUCKETING_ATTRIBUTE` and an `errorMessage`: the `open-feature` crate's
//!   resolutions have no error field of their own.
//! - Events: the `open-feature` crate has no provider-event API yet, so the provider offers its
//!   own: [`FlagstaffProvider::on_event`] delivers `PROVIDER_CONFIGURATION_CHANGED` with the
//!   flags each revision changed, from the client's change listeners.

use std::time::Duration;

use flagstaff_engine::{Context, Detail, ErrorKind, OpenFeatureOutcome, OpenFeatureReason};
use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    async_trait, EvaluationContext, EvaluationContextFieldValue, EvaluationError,
    EvaluationErrorCode, EvaluationReason, EvaluationResult, FlagMetadata, StructValue, Value,
};

use crate::evaluation::{with_detail, Bool, FlagType, Json, Number, Str};
use crate::listeners::Subscription;
use crate::status::State;
use crate::Client;

/// A provider event, named as in the OpenFeature specification.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderEvent {
    /// `PROVIDER_CONFIGURATION_CHANGED`: flags changed (added, edited, removed, or a segment
    /// or prerequisite they use changed) in one revision.
    ConfigurationChanged {
        /// The changed flags' keys, sorted.
        flags_changed: Vec<String>,
        /// The revision that changed them.
        revision: u64,
    },
}

/// An OpenFeature provider evaluating flags locally with a Flagstaff [`Client`].
#[derive(Debug)]
pub struct FlagstaffProvider {
    client: Client,
    metadata: ProviderMetadata,
    ready_timeout: Duration,
}

impl FlagstaffProvider {
    /// A provider evaluating with `client`, which keeps serving its other callers too.
    pub fn new(client: Client) -> FlagstaffProvider {
        FlagstaffProvider {
            client,
            metadata: ProviderMetadata::new("flagstaff"),
            ready_timeout: Duration::from_secs(5),
        }
    }

    /// How long OpenFeature's initialisation of the provider (in `set_provider`) waits for the
    /// client's data; 5 s by default. Evaluations before that answer `PROVIDER_NOT_READY`,
    /// unless the client serves a bootstrap or cache file.
    pub fn ready_timeout(mut self, timeout: Duration) -> FlagstaffProvider {
        self.ready_timeout = timeout;
        self
    }

    /// Calls `listener` with the provider's events, on the client's listener thread.
    /// Subscribe before handing the provider to OpenFeature; dropping the returned
    /// [`Subscription`] unregisters the listener.
    pub fn on_event(
        &self,
        listener: impl Fn(&ProviderEvent) + Send + Sync + 'static,
    ) -> Subscription {
        self.client.listeners().on_update(move |changes| {
            listener(&ProviderEvent::ConfigurationChanged {
                flags_changed: changes.flags.iter().map(|c| c.key.clone()).collect(),
                revision: changes.revision,
            });
        })
    }

    /// Resolves flag `key` as a `T`, its value converted by `convert` (`None`: a type
    /// mismatch), counted in the client's usage metrics like its own typed calls. Before the
    /// client has data: `PROVIDER_NOT_READY`.
    fn resolve<T: FlagType, U>(
        &self,
        key: &str,
        ctx: &EvaluationContext,
        default: T::Value<'_>,
        convert: impl for<'s> FnOnce(T::Value<'s>) -> Option<U>,
    ) -> EvaluationResult<ResolutionDetails<U>> {
        let context = context(ctx);
        with_detail::<T, _>(self.client.core(), key, &context, default, |detail| {
            resolution(key, typed(detail, convert))
        })
    }
}

/// OpenFeature's resolution of a Flagstaff evaluation.
fn resolution<T>(
    key: &str,
    detail: Detail<'_, Option<T>>,
) -> EvaluationResult<ResolutionDetails<T>> {
    let mut metadata = FlagMetadata::default();
    if let Some(version) = detail.version {
        metadata.add_value("version", i64::try_from(version).unwrap_or(i64::MAX));
    }
    let outcome = OpenFeatureOutcome::of(&detail);
    if let Some(id) = outcome.rule_id {
        metadata.add_value("ruleId", id);
    }
    if let Some(bucket) = outcome.bucket {
        metadata.add_value("bucket", i64::from(bucket));
    }
    if let Some(prerequisite) = outcome.prerequisite {
        metadata.add_value("prerequisite", prerequisite);
    }
    match outcome.error {
        None => {}
        Some(ErrorKind::MissingBucketingAttribute) => {
            metadata.add_value("errorCode", ErrorKind::MissingBucketingAttribute.as_str());
            metadata.add_value(
                "errorMessage",
                "the split's bucketing attribute is missing, empty, or not a string or \
                     number: the flag's off variant is served",
            );
        }
        Some(kind) => return Err(error_of(kind, key)),
    }
    let reason = match outcome.reason {
        OpenFeatureReason::Disabled => EvaluationReason::Disabled,
        OpenFeatureReason::TargetingMatch => EvaluationReason::TargetingMatch,
        OpenFeatureReason::Split => EvaluationReason::Split,
        OpenFeatureReason::Default => EvaluationReason::Default,
        OpenFeatureReason::Error => EvaluationReason::Error,
    };
    let Some(value) = detail.value else {
        return Err(error(
            EvaluationErrorCode::TypeMismatch,
            format!("flag {key:?} does not have a value of the type asked for"),
        ));
    };
    Ok(ResolutionDetails {
        value,
        variant: detail.variant.map(str::to_owned),
        reason: Some(reason),
        flag_metadata: Some(metadata),
    })
}

#[async_trait]
impl FeatureProvider for FlagstaffProvider {
    async fn initialize(&mut self, _context: &EvaluationContext) {
        if let Err(e) = self.client.wait_ready(self.ready_timeout).await {
            tracing::warn!(error = %e, "the Flagstaff OpenFeature provider starts without live data");
        }
    }

    fn status(&self) -> ProviderStatus {
        let status = self.client.status();
        match status.state {
            State::Ready => ProviderStatus::Ready,
            // Serving a bootstrap or cache file, or the last data while disconnected or closed.
            _ if status.has_data() => ProviderStatus::STALE,
            _ => ProviderStatus::NotReady,
        }
    }

    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve::<Bool, _>(key, ctx, false, Some)
    }

    async fn resolve_int_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve::<Number, _>(key, ctx, 0.0, whole)
    }

    async fn resolve_float_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve::<Number, _>(key, ctx, 0.0, Some)
    }

    async fn resolve_string_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve::<Str, _>(key, ctx, "", |v| Some(v.to_owned()))
    }

    async fn resolve_struct_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve::<Json, _>(
            key,
            ctx,
            &serde_json::Value::Null,
            |v| match Value::try_from(v) {
                Ok(Value::Struct(fields)) => Some(fields),
                _ => None,
            },
        )
    }
}

/// The detail with its value converted: `None` when the caller's default was served (no
/// variant) or the value does not convert.
fn typed<'a, T, U>(
    detail: Detail<'a, T>,
    convert: impl FnOnce(T) -> Option<U>,
) -> Detail<'a, Option<U>> {
    Detail {
        value: detail.variant.and_then(|_| convert(detail.value)),
        variant: detail.variant,
        reason: detail.reason,
        version: detail.version,
        bucket: detail.bucket,
    }
}

/// `n` as an integer, when it is a whole number in `i64`'s range.
fn whole(n: f64) -> Option<i64> {
    // 2^63 as f64 is exactly representable; anything at or above it does not fit.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (n.fract() == 0.0 && (-LIMIT..LIMIT).contains(&n)).then_some(n as i64)
}

/// The Flagstaff context of an OpenFeature one, borrowing its strings.
fn context(ctx: &EvaluationContext) -> Context<'_> {
    let mut context = Context::new(ctx.targeting_key.as_deref().unwrap_or(""));
    for (name, value) in &ctx.custom_fields {
        match value {
            EvaluationContextFieldValue::Bool(b) => context.set(name.as_str(), *b),
            EvaluationContextFieldValue::Int(i) => context.set(name.as_str(), *i as f64),
            EvaluationContextFieldValue::Float(f) => context.set(name.as_str(), *f),
            EvaluationContextFieldValue::String(s) => context.set(name.as_str(), s.as_str()),
            EvaluationContextFieldValue::DateTime(t) => {
                let millis = t.unix_timestamp_nanos() / 1_000_000;
                context.set(name.as_str(), millis as f64);
            }
            EvaluationContextFieldValue::Struct(_) => {}
        }
    }
    context
}

fn error(code: EvaluationErrorCode, message: impl Into<String>) -> EvaluationError {
    EvaluationError {
        code,
        message: Some(message.into()),
    }
}

fn error_of(kind: ErrorKind, key: &str) -> EvaluationError {
    match kind {
        ErrorKind::FlagNotFound => error(
            EvaluationErrorCode::FlagNotFound,
            format!("no flag {key:?} in this environment"),
        ),
        ErrorKind::TypeMismatch => error(
            EvaluationErrorCode::TypeMismatch,
            format!("flag {key:?} does not have a value of the type asked for"),
        ),
        ErrorKind::ClientNotReady => error(
            EvaluationErrorCode::ProviderNotReady,
            "the Flagstaff client has no data yet",
        ),
        other => error(EvaluationErrorCode::General(other.as_str().to_owned()), ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestData;

    #[tokio::test]
    async fn resolutions_are_counted_like_the_clients_own_evaluations() {
        let data = TestData::new();
        data.set_bool("checkout-v2", true);
        let client = data.client();
        let provider = FlagstaffProvider::new(client.clone());
        let ctx = EvaluationContext::default().with_targeting_key("user-1");
        for _ in 0..3 {
            let resolved = provider
                .resolve_bool_value("checkout-v2", &ctx)
                .await
                .expect("resolves");
            assert!(resolved.value);
        }
        assert!(provider.resolve_bool_value("missing", &ctx).await.is_err());
        let (windows, ..) = client.core().usage.take();
        let mut counts: Vec<(String, String, u64)> = windows
            .iter()
            .flat_map(|w| &w.evaluations)
            .map(|e| (e.flag.clone(), e.variant.clone(), e.count))
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [
                ("checkout-v2".to_owned(), "value".to_owned(), 3),
                ("missing".to_owned(), String::new(), 1)
            ]
        );
    }
}
