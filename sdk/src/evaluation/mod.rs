//! How the client evaluates: one generic path behind every typed method (`bool_value`,
//! `with_string`, `json_detail`, ... and the OpenFeature provider's resolutions).
//!
//! A [`FlagType`] names one kind of flag value (boolean, string, number, JSON) by the Rust
//! type an evaluation borrows from the snapshot. [`counted`] and [`with_value`] evaluate the
//! value, [`with_detail`] the detail (before the client has data: the caller's default with
//! reason `ERROR(CLIENT_NOT_READY)`); each runs on the evaluating thread's copy of the
//! client's snapshot and counts the variant served ([`per_thread`]). The engine's
//! [`counting::evaluate`] is what each calls, with the type (and value or detail) asked for.
//!
//! Everything here is inlined into the typed methods, so that each compiles to the code a
//! hand-written method for its type would: the hot path's closures capture what the earlier
//! hand-written ones did, the same way.

pub(crate) mod per_thread;

use std::sync::Arc;

use flagstaff_engine::counting::{self, Outcome};
use flagstaff_engine::{Context, Detail, ErrorKind, Reason, Snapshot};
use serde_json::Value;

use self::per_thread::Counting;
use crate::core::Core;

/// One kind of flag value, named by the Rust type an evaluation borrows from the snapshot.
pub(crate) trait FlagType {
    /// The value, borrowed from the snapshot for `'s` (`bool` and `f64` borrow nothing).
    type Value<'s>: Copy + Outcome<'s, Default = Self::Value<'s>>;
    /// Its detail, as the engine gives it.
    type Detail<'s>: Outcome<'s, Default = Self::Value<'s>> + Into<Detail<'s, Self::Value<'s>>>;
    /// The value as the owned forms (`bool_value`, `string_detail`, ...) return it.
    type Owned;

    /// The value with a shorter borrow: the caller's default, for an evaluation's borrow of
    /// the snapshot.
    fn shorten<'s, 'l: 's>(value: Self::Value<'l>) -> Self::Value<'s>;

    /// The value, owned.
    fn to_owned(value: Self::Value<'_>) -> Self::Owned;
}

/// Boolean flags: `bool`.
#[derive(Debug)]
pub(crate) enum Bool {}

/// String flags: `&str`.
#[derive(Debug)]
pub(crate) enum Str {}

/// Number flags: `f64`.
#[derive(Debug)]
pub(crate) enum Number {}

/// JSON flags: `&serde_json::Value`.
#[derive(Debug)]
pub(crate) enum Json {}

impl FlagType for Bool {
    type Value<'s> = bool;
    type Detail<'s> = Detail<'s, bool>;
    type Owned = bool;

    #[inline(always)]
    fn shorten<'s, 'l: 's>(value: bool) -> bool {
        value
    }

    #[inline(always)]
    fn to_owned(value: bool) -> bool {
        value
    }
}

impl FlagType for Str {
    type Value<'s> = &'s str;
    type Detail<'s> = Detail<'s, &'s str>;
    type Owned = String;

    #[inline(always)]
    fn shorten<'s, 'l: 's>(value: &'l str) -> &'s str {
        value
    }

    fn to_owned(value: &str) -> String {
        value.to_owned()
    }
}

impl FlagType for Number {
    type Value<'s> = f64;
    type Detail<'s> = Detail<'s, f64>;
    type Owned = f64;

    #[inline(always)]
    fn shorten<'s, 'l: 's>(value: f64) -> f64 {
        value
    }

    #[inline(always)]
    fn to_owned(value: f64) -> f64 {
        value
    }
}

impl FlagType for Json {
    type Value<'s> = &'s Value;
    type Detail<'s> = Detail<'s, &'s Value>;
    type Owned = Value;

    #[inline(always)]
    fn shorten<'s, 'l: 's>(value: &'l Value) -> &'s Value {
        value
    }

    fn to_owned(value: &Value) -> Value {
        value.clone()
    }
}

/// What a value evaluation runs on the thread's snapshot: the evaluation of flag `key` as a
/// `T`, counted, its value handed to `f`. For the hot path's split into a quick and a slow
/// path (see `Client::bool_value`): the closure owns what it captures, so that either path
/// can be given a new one.
#[inline(always)]
pub(crate) fn counted<'a, 'c, 'd, T, R, F>(
    key: &'a str,
    ctx: &'a Context<'c>,
    default: T::Value<'d>,
    f: F,
) -> impl FnOnce(&Snapshot, bool, Counting<'_>) -> R + use<'a, 'c, 'd, T, R, F>
where
    T: FlagType,
    F: for<'s> FnOnce(T::Value<'s>) -> R,
{
    move |s, _, counter| {
        let (value, id) = counting::evaluate::<T::Value<'_>>(s, key, ctx, T::shorten(default));
        counter.count(id);
        f(value)
    }
}

/// Calls `f` with the value of flag `key` for `ctx` as a `T` (or `default`), borrowed from
/// the snapshot, and counts the evaluation. `f` may evaluate flags itself.
#[inline(always)]
pub(crate) fn with_value<T: FlagType, R>(
    core: &Arc<Core>,
    key: &str,
    ctx: &Context<'_>,
    default: T::Value<'_>,
    f: impl for<'s> FnOnce(T::Value<'s>) -> R,
) -> R {
    per_thread::evaluate(core, key, |s, _, counter| {
        let (value, id) = counting::evaluate::<T::Value<'_>>(s, key, ctx, T::shorten(default));
        counter.count(id);
        f(value)
    })
}

/// Calls `f` with the detail of flag `key` for `ctx` as a `T`, borrowed from the snapshot, and
/// counts the evaluation. Before the client has data: `default`, with reason
/// `ERROR(CLIENT_NOT_READY)`. `f` may evaluate flags itself.
#[inline(always)]
pub(crate) fn with_detail<T: FlagType, R>(
    core: &Arc<Core>,
    key: &str,
    ctx: &Context<'_>,
    default: T::Value<'_>,
    f: impl for<'s> FnOnce(Detail<'s, T::Value<'s>>) -> R,
) -> R {
    per_thread::evaluate(core, key, |s, ready, counter| {
        let (detail, id) = if ready {
            let (detail, id) =
                counting::evaluate::<T::Detail<'_>>(s, key, ctx, T::shorten(default));
            (detail.into(), id)
        } else {
            (not_ready(T::shorten(default)), None)
        };
        counter.count(id);
        f(detail)
    })
}

/// The detail of an evaluation before the client has any data.
fn not_ready<T>(default: T) -> Detail<'static, T> {
    Detail {
        value: default,
        variant: None,
        reason: Reason::Error(ErrorKind::ClientNotReady),
        version: None,
        bucket: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{EvaluationDetail, EvaluationReason, TestData};

    /// Whether `borrowed` and `owned` say the same, `value` turning the borrowed value.
    fn same<T: PartialEq + std::fmt::Debug, V>(
        borrowed: Detail<'_, V>,
        owned: &EvaluationDetail<T>,
        value: impl FnOnce(V) -> T,
    ) {
        assert_eq!(value(borrowed.value), owned.value);
        assert_eq!(borrowed.variant, owned.variant.as_deref());
        assert_eq!(EvaluationReason::from(borrowed.reason), owned.reason);
        assert_eq!(
            (borrowed.version, borrowed.bucket),
            (owned.version, owned.bucket)
        );
    }

    #[test]
    fn every_type_has_its_borrowed_detail_and_it_agrees_with_the_owned_one() {
        let data = TestData::new();
        data.set_bool("b", true);
        data.set_string("s", "hello");
        data.set_number("n", 2.5);
        data.set_json("j", json!({"a": 1}));
        let client = data.client();
        let ctx = Context::new("user-1");
        for key in ["b", "missing"] {
            let owned = client.bool_detail(key, &ctx, false);
            client.with_bool_detail(key, &ctx, false, |d| same(d, &owned, |v| v));
        }
        for key in ["s", "b"] {
            let owned = client.string_detail(key, &ctx, "default");
            client.with_string_detail(key, &ctx, "default", |d| same(d, &owned, str::to_owned));
        }
        for key in ["n", "missing"] {
            let owned = client.number_detail(key, &ctx, 1.0);
            client.with_number_detail(key, &ctx, 1.0, |d| same(d, &owned, |v| v));
        }
        for key in ["j", "s"] {
            let owned = client.json_detail(key, &ctx, json!(null));
            client.with_json_detail(key, &ctx, &json!(null), |d| same(d, &owned, Clone::clone));
        }
        assert_eq!(client.json_value("j", &ctx, json!(null)), json!({"a": 1}));
        assert_eq!(client.json_value("s", &ctx, json!(7)), json!(7));
        let (windows, ..) = client.core().usage.take();
        let counted: u64 = windows
            .iter()
            .flat_map(|w| &w.evaluations)
            .map(|e| e.count)
            .sum();
        assert_eq!(counted, 2 * 8 + 2, "every evaluation is counted");
    }
}
