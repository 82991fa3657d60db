//! Condition operands as the engine reads them: strict semver versions, times (RFC 3339 or
//! Unix milliseconds) and regexes. Validation checks documents with these and compilation
//! prepares conditions with them, so a value is accepted exactly when it can be compiled.

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::Input;
use serde_json::Value;

/// Parses a strict semver 2.0 version.
pub(crate) fn parse_semver(s: &str) -> Option<semver::Version> {
    semver::Version::parse(s).ok()
}

/// Parses a time: an RFC 3339 string or a number of Unix milliseconds, as Unix nanoseconds.
pub(crate) fn parse_time(value: &Value) -> Option<i128> {
    match value {
        Value::String(s) => parse_rfc3339(s),
        Value::Number(n) => n.as_f64().and_then(millis_to_nanos),
        _ => None,
    }
}

pub(crate) fn parse_rfc3339(s: &str) -> Option<i128> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

pub(crate) fn millis_to_nanos(ms: f64) -> Option<i128> {
    if !ms.is_finite() {
        return None;
    }
    if ms.fract() == 0.0 && ms.abs() < 9_007_199_254_740_992.0 {
        Some(i128::from(ms as i64) * 1_000_000)
    } else {
        // Fractional milliseconds: f64 keeps about 0.25 µs of precision near the present.
        Some((ms * 1e6) as i128)
    }
}

/// A compiled regex. Patterns that fit a small fully built DFA are searched without any mutable
/// state (no cache pool, so no lock and no allocation per search); others, such as those using
/// Unicode word boundaries, use the regex crate's meta engine.
#[derive(Debug)]
pub(crate) enum Matcher {
    Dfa(Box<dense::DFA<Vec<u32>>>),
    Meta(regex_automata::meta::Regex),
}

/// Why a pattern did not compile.
#[derive(Debug)]
pub(crate) enum RegexError {
    /// Its compiled form would be over the limit.
    TooLarge,
    /// It is not a valid pattern.
    Invalid,
}

impl Matcher {
    const DFA_LIMIT: usize = 256 * 1024;

    /// Compiles a stored pattern: no limit beyond the regex engine's own, so that a document
    /// accepted before a limit existed still loads and evaluates as it did.
    pub(crate) fn new(pattern: &str) -> Option<Matcher> {
        Matcher::build(pattern, None).ok()
    }

    /// Compiles `pattern`, refusing it when its automaton would take more than `limit` bytes
    /// (`None`: the regex engine's default limit).
    pub(crate) fn build(pattern: &str, limit: Option<usize>) -> Result<Matcher, RegexError> {
        let dfa_limit = limit.map_or(Self::DFA_LIMIT, |l| l.min(Self::DFA_LIMIT));
        let config = dense::Config::new()
            .start_kind(StartKind::Unanchored)
            .dfa_size_limit(Some(dfa_limit))
            .determinize_size_limit(Some(dfa_limit));
        if let Ok(dfa) = dense::Builder::new().configure(config).build(pattern) {
            return Ok(Matcher::Dfa(Box::new(dfa)));
        }
        let mut config = regex_automata::meta::Config::new();
        if let Some(limit) = limit {
            config = config
                .nfa_size_limit(Some(limit))
                .onepass_size_limit(Some(limit));
        }
        regex_automata::meta::Builder::new()
            .configure(config)
            // As the regex crate's `bytes::Regex`: haystacks are the bytes of UTF-8 strings.
            .syntax(regex_automata::util::syntax::Config::new().utf8(false))
            .build(pattern)
            .map(Matcher::Meta)
            .map_err(|e| match e.size_limit() {
                Some(_) => RegexError::TooLarge,
                None => RegexError::Invalid,
            })
    }

    /// The heap memory the compiled pattern holds.
    pub(crate) fn memory_usage(&self) -> usize {
        match self {
            Matcher::Dfa(dfa) => dfa.memory_usage(),
            Matcher::Meta(re) => re.memory_usage(),
        }
    }

    #[inline]
    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        match self {
            Matcher::Dfa(dfa) => matches!(
                dfa.try_search_fwd(&Input::new(haystack).earliest(true)),
                Ok(Some(_))
            ),
            Matcher::Meta(re) => re.is_match(Input::new(haystack).earliest(true)),
        }
    }
}
