//! Console sessions (DESIGN.md section 11): a random id in a cookie, the session stored in the
//! store under the id's SHA-256 (so that any replica serves it), ended after 12 hours without
//! use, by signing out, and by the revocation of the token it signed in with; a session of
//! someone a sign-on proxy names is not stored (its CSRF token is derived from its cookie and
//! the person). And the checks every POST passes: its `Origin`, and its CSRF token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue};

use super::blocking;
use crate::auth::{hash, Tokens};
use crate::error::ServerError;
use crate::storage::{now_ms, random_id, Role, SessionRecord, Store};

use super::users::Person;

/// How long a session lasts without use.
pub const IDLE_MS: u64 = 12 * 60 * 60 * 1000;

/// A session's last use is written again only after this long, so that reading pages does
/// not write to the store on every request.
const TOUCH_MS: u64 = 60 * 1000;

/// How often, at most, sessions unused for 12 hours are looked for and removed.
const PRUNE_EVERY_MS: u64 = 60 * 1000;

/// The cookies of the console: names and attributes, with or without TLS.
#[derive(Debug, Clone, Copy)]
pub struct Cookies {
    /// Served over TLS: cookies are `Secure` and `__Host-` prefixed.
    pub secure: bool,
}

impl Cookies {
    /// The session cookie's name.
    pub fn session(self) -> &'static str {
        if self.secure {
            "__Host-flagstaff_session"
        } else {
            "flagstaff_session"
        }
    }

    /// The sign-in form's CSRF cookie's name: the form's `csrf` field must equal it.
    pub fn login(self) -> &'static str {
        if self.secure {
            "__Host-flagstaff_login"
        } else {
            "flagstaff_login"
        }
    }

    /// A `Set-Cookie` value giving `name` the `value`, for the whole console, for the
    /// browser's session (`max_age` 0: removes it).
    pub fn set(self, name: &str, value: &str, remove: bool) -> HeaderValue {
        let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
        if self.secure {
            cookie.push_str("; Secure");
        }
        if remove {
            cookie.push_str("; Max-Age=0");
        }
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The value of cookie `name` in `headers`, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A signed-in person, as a request of theirs sees them.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session as stored; signed in through a proxy, as derived (never stored), with the
    /// role and environments the users file gives the person now.
    pub record: SessionRecord,
}

impl Session {
    /// Whether the person may see and change `environment`: an admin every one, an editor
    /// those they were given.
    pub fn may_see(&self, environment: &str) -> bool {
        self.record.role == Role::Admin || self.record.environments.iter().any(|e| e == environment)
    }

    /// Whether the person is an admin.
    pub fn is_admin(&self) -> bool {
        self.record.role == Role::Admin
    }

    /// Whether an authenticating proxy signed the person in (rather than a token).
    pub fn is_proxied(&self) -> bool {
        self.record.token.is_none()
    }

    /// Who the audit log names as having made the session's changes: the person and the
    /// console (`alice@example.com via console`; for a token's session, the token's name, as
    /// the Admin API names it, and the console).
    pub fn actor(&self) -> String {
        format!("{} via console", self.record.person)
    }
}

/// The sessions, in the store.
#[derive(Debug)]
pub struct Sessions<S> {
    store: Arc<S>,
    tokens: Arc<Tokens<S>>,
    /// When sessions unused for 12 hours were last removed, in Unix milliseconds.
    pruned_ms: AtomicU64,
}

impl<S: Store> Sessions<S> {
    /// Sessions kept in `store`, of tokens in `tokens`.
    pub fn new(store: Arc<S>, tokens: Arc<Tokens<S>>) -> Sessions<S> {
        Sessions {
            store,
            tokens,
            pruned_ms: AtomicU64::new(0),
        }
    }

    /// The session of `person`, whom a proxy signed in and the users file lists with
    /// `grant`: the one of the cookie `id` if it is well formed, else a new one, with its id
    /// for the cookie. Nothing is stored (docs/console.md, "Sessions and forms"): the
    /// proxy names the person on every request, so the cookie only gives their forms a CSRF
    /// token, derived from the cookie and the person, which any replica derives alike. So
    /// requests that drop the cookie cost the store nothing, and someone else's cookie gives
    /// no CSRF token of theirs.
    pub fn of_person(
        &self,
        id: Option<&str>,
        person: &str,
        grant: &Person,
    ) -> (Session, Option<String>) {
        let (id, began) = match id.filter(|id| well_formed(id)) {
            Some(id) => (id.to_owned(), None),
            None => {
                let id = new_id();
                (id.clone(), Some(id))
            }
        };
        let now = now_ms();
        let record = SessionRecord {
            id_hash: hash(&id),
            person: person.to_owned(),
            token: None,
            role: grant.role,
            environments: grant.environments.clone(),
            csrf: proxied_csrf(&id, person),
            created_ms: now,
            seen_ms: now,
        };
        (Session { record }, began)
    }

    /// Stores a new session of `person`, signed in with `token` (`None`: by a proxy), allowed
    /// what `grant` says: its id (for the cookie) and the record. Sessions unused for 12
    /// hours are removed now and then, so that how many are kept is bounded by how many
    /// began in 12 hours.
    async fn begin(
        &self,
        person: &str,
        token: Option<&str>,
        grant: &Person,
    ) -> Result<(String, SessionRecord), ServerError> {
        let id = new_id();
        let now = now_ms();
        let record = SessionRecord {
            id_hash: hash(&id),
            person: person.to_owned(),
            token: token.map(str::to_owned),
            role: grant.role,
            environments: grant.environments.clone(),
            csrf: random_id(),
            created_ms: now,
            seen_ms: now,
        };
        let (store, stored) = (self.store.clone(), record.clone());
        blocking(move || store.put_session(&stored)).await?;
        let pruned = self.pruned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(pruned) >= PRUNE_EVERY_MS
            && self
                .pruned_ms
                .compare_exchange(pruned, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if let Err(e) = self.prune().await {
                tracing::warn!(error = %e, "cannot remove the console sessions unused for 12 hours");
            }
        }
        Ok((id, record))
    }

    /// Signs in with `secret`, an `admin` or `editor` token: the new session's id (for the
    /// cookie) and the session. Any other token is refused, saying why.
    pub async fn sign_in(&self, secret: &str) -> Result<(String, SessionRecord), ServerError> {
        let token = self.tokens.authenticate(secret.trim()).await?;
        let environments = match (token.role, &token.environment) {
            (Role::Admin, _) => Vec::new(),
            (Role::Editor, Some(environment)) => vec![environment.clone()],
            _ => {
                return Err(ServerError::PermissionDenied(
                    "the console takes an admin or editor token; an sdk or client token only \
                     evaluates flags"
                        .to_owned(),
                ))
            }
        };
        let grant = Person {
            role: token.role,
            environments,
        };
        self.begin(&token.name, Some(&token.id), &grant).await
    }

    /// The session of the cookie `id`, if it is one still going: not idle for 12 hours, its
    /// token not revoked. One that ended is removed.
    pub async fn find(&self, id: &str) -> Result<Option<Session>, ServerError> {
        // Ids are 64 hex digits; anything else is no session, and not looked up.
        if !well_formed(id) {
            return Ok(None);
        }
        let id_hash = hash(id);
        let store = self.store.clone();
        let looked_up = id_hash.clone();
        let Some(mut record) = blocking(move || store.session(&looked_up)).await? else {
            return Ok(None);
        };
        let now = now_ms();
        let revoked = match &record.token {
            Some(token) => self.tokens.find(token).await?.is_none_or(|t| t.revoked),
            None => false,
        };
        if revoked || now.saturating_sub(record.seen_ms) > IDLE_MS {
            self.end(&id_hash).await?;
            return Ok(None);
        }
        if now.saturating_sub(record.seen_ms) > TOUCH_MS {
            record.seen_ms = now;
            let (store, stored) = (self.store.clone(), record.clone());
            blocking(move || store.put_session(&stored)).await?;
        }
        Ok(Some(Session { record }))
    }

    /// Ends the session stored under `id_hash`.
    pub async fn end(&self, id_hash: &str) -> Result<(), ServerError> {
        let (store, id_hash) = (self.store.clone(), id_hash.to_owned());
        blocking(move || store.delete_session(&id_hash)).await
    }

    /// Removes the sessions unused for 12 hours; how many.
    pub async fn prune(&self) -> Result<usize, ServerError> {
        let store = self.store.clone();
        let before = now_ms().saturating_sub(IDLE_MS);
        blocking(move || store.prune_sessions(before)).await
    }
}

/// A new session id: 64 random hex digits.
fn new_id() -> String {
    format!("{}{}", random_id(), random_id())
}

/// Whether `id` could be a session id (64 hex digits); anything else is none.
fn well_formed(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The CSRF token of the forms of `person`, signed in by a proxy, whose cookie holds `id`:
/// unknown to whoever does not have the cookie, and another for another person.
fn proxied_csrf(id: &str, person: &str) -> String {
    hash(&format!("console csrf\n{person}\n{id}"))
}

/// Whether a POST with `headers` comes from a page of this console: its `Origin` is one of
/// `origins` (what the browser shows in the address bar for this server). A browser sends
/// `Origin` with every POST; a request without one is refused too.
pub fn same_origin(headers: &HeaderMap, origins: &[String]) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|origin| origins.iter().any(|o| o.eq_ignore_ascii_case(origin)))
}

/// Compares two CSRF tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; flagstaff_session=abc; b=2"),
        );
        assert_eq!(cookie(&headers, "flagstaff_session"), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn cookies_under_tls_are_secure_and_host_prefixed() {
        let tls = Cookies { secure: true };
        let set = tls.set(tls.session(), "x", false);
        assert_eq!(
            set.to_str().unwrap(),
            "__Host-flagstaff_session=x; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        let plain = Cookies { secure: false };
        assert_eq!(
            plain.set(plain.session(), "", true).to_str().unwrap(),
            "flagstaff_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        );
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", ""));
    }
}
