//! Single sign-on through an authenticating reverse proxy (DESIGN.md section 11,
//! docs/console.md "Single sign-on behind a proxy"): the proxy signs people in and names them
//! in a header (`--console-proxy-header`); flagstaffd believes that header only from a TCP
//! peer inside `--console-proxy-from` (never what `X-Forwarded-For` says), and lets in only
//! the people of the users file (`--console-users`), with the role and environments it gives
//! them.
//!
//! Every console route but the stylesheet passes [`gate`]: a request from outside the
//! ranges, without the header, or naming someone not listed is refused with a page saying
//! so. A person let in gets a console session of their own: a cookie from which, with their
//! name, their forms' CSRF token is derived, so that any replica accepts it and nothing is
//! stored however many requests come without the cookie.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::error::ServerError;
use crate::storage::Store;

use super::users::Users;
use super::{problem, session, Console, Session};

/// Most address ranges `--console-proxy-from` takes.
pub const MAX_RANGES: usize = 100;

/// Longest value of the header naming the person that is read.
const MAX_HEADER_BYTES: usize = 1024;

/// How the console signs people in through an authenticating proxy.
#[derive(Debug)]
pub struct ProxySignOn {
    /// The header the proxy names the signed-in person in.
    header: HeaderName,
    /// The addresses the proxy connects from.
    from: Vec<IpNet>,
    /// The people the console lets in.
    users: Users,
}

impl ProxySignOn {
    /// Sign-on through a proxy that names the person in `header`, connecting from the address
    /// ranges `from` (CIDR; an entry may hold several, comma-separated), for the people of
    /// the users file `users`, read now. Errors name the option that is wrong and why.
    pub fn new(header: &str, from: &[String], users: &Path) -> Result<ProxySignOn, ServerError> {
        let header = HeaderName::from_bytes(header.trim().as_bytes()).map_err(|_| {
            ServerError::Invalid(format!(
                "--console-proxy-header {header:?} is not a header name (e.g. X-Forwarded-Email)"
            ))
        })?;
        let from = from
            .iter()
            .flat_map(|entry| entry.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(parse_range)
            .collect::<Result<Vec<IpNet>, String>>()
            .map_err(ServerError::Invalid)?;
        if from.is_empty() {
            return Err(ServerError::Invalid(format!(
                "--console-proxy-header {header} needs --console-proxy-from: the address ranges \
                 the proxy connects from (e.g. 10.0.0.0/8), whose requests alone may name a \
                 person"
            )));
        }
        if from.len() > MAX_RANGES {
            return Err(ServerError::Invalid(format!(
                "--console-proxy-from gives {} address ranges, more than {MAX_RANGES}",
                from.len()
            )));
        }
        let users = Users::load(users)?;
        Ok(ProxySignOn {
            header,
            from,
            users,
        })
    }

    /// Whether a request from `peer` comes from the proxy. An IPv4 peer on an IPv6 socket
    /// (`::ffff:10.1.2.3`) is also taken as its IPv4 address.
    fn trusts(&self, peer: IpAddr) -> bool {
        let canonical = peer.to_canonical();
        self.from
            .iter()
            .any(|range| range.contains(&peer) || range.contains(&canonical))
    }

    /// The person the proxy names in `headers`, if it names exactly one.
    fn named(&self, headers: &HeaderMap) -> Option<String> {
        let mut values = headers.get_all(&self.header).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return None;
        };
        let name = value.to_str().ok()?.trim();
        (!name.is_empty() && name.len() <= MAX_HEADER_BYTES).then(|| name.to_owned())
    }
}

/// `text` as an address range: CIDR (`10.0.0.0/8`, `fd00::/8`; bits past the prefix are
/// ignored) or one address (`10.1.2.3`, `::1`).
pub fn parse_range(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let parsed = match text.contains('/') {
        true => text.parse::<IpNet>().map(|range| range.trunc()).ok(),
        false => text.parse::<IpAddr>().map(IpNet::from).ok(),
    };
    parsed.ok_or_else(|| {
        format!(
            "--console-proxy-from {text:?} is not an address range: write it as CIDR, e.g. \
             10.0.0.0/8, 192.168.1.10/32 or fd00::/8"
        )
    })
}

/// The session a request's person has, when the proxy signed them in: what [`gate`] found.
#[derive(Debug, Clone)]
pub(super) struct Proxied(pub(super) Session);

/// Lets through to the console only requests of people the proxy signed in and the users
/// file lists, each with their session; others get a page saying why not. Without proxy
/// sign-on, lets everything through.
pub(super) async fn gate<S: Store>(
    State(console): State<Arc<Console<S>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(proxy) = &console.proxy else {
        return next.run(request).await;
    };
    let peer = crate::http::peer_address(request.extensions());
    if !peer.is_some_and(|peer| proxy.trusts(peer)) {
        let from = peer.map_or_else(|| "an unknown address".to_owned(), |p| p.to_string());
        tracing::debug!(peer = %from, "a console request not from the sign-on proxy was refused");
        return problem(
            StatusCode::FORBIDDEN,
            None,
            "Sign in through the sign-on proxy",
            &format!(
                "This console is reached through its sign-on proxy, and this request came from \
                 {from}, which is not the proxy's address. Open the console at the address \
                 your organisation gives for it."
            ),
        );
    }
    let Some(named) = proxy.named(request.headers()) else {
        return problem(
            StatusCode::FORBIDDEN,
            None,
            "Not signed in",
            &format!(
                "The sign-on proxy did not say who you are (one {} header naming you). Sign in \
                 at the proxy and try again.",
                proxy.header
            ),
        );
    };
    let people = proxy.users.people().await;
    let Some((person, grant)) = people.find(&named) else {
        tracing::info!(person = %named, "the console refused someone its users file does not list");
        return problem(
            StatusCode::FORBIDDEN,
            None,
            "Not a user of this console",
            &format!(
                "You are signed in as {named}, who is not in the console's users file. Ask \
                 whoever runs Flagstaff to add you."
            ),
        );
    };
    let cookies = console.cookies;
    let id = session::cookie(request.headers(), cookies.session());
    let (session, began) = console.sessions.of_person(id, person, grant);
    if began.is_some() {
        tracing::info!(actor = %session.actor(), "a console session began through the sign-on proxy");
    }
    request.extensions_mut().insert(Proxied(session));
    let mut response = next.run(request).await;
    if let Some(id) = began {
        // A page that ends the session (signing out) removes its cookie; a fresh one is made
        // on the next request.
        let ended = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|c| c.as_bytes().starts_with(cookies.session().as_bytes()));
        if !ended {
            response.headers_mut().append(
                header::SET_COOKIE,
                cookies.set(cookies.session(), &id, false),
            );
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> IpNet {
        parse_range(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn ranges_are_cidr_or_one_address_in_ipv4_and_ipv6() {
        assert!(range("10.0.0.0/8").contains(&ip("10.200.3.4")));
        assert!(!range("10.0.0.0/8").contains(&ip("11.0.0.1")));
        assert!(range(" 192.168.1.10/32 ").contains(&ip("192.168.1.10")));
        assert!(!range("192.168.1.10/32").contains(&ip("192.168.1.11")));
        assert!(range("127.0.0.1").contains(&ip("127.0.0.1")));
        assert!(!range("127.0.0.1").contains(&ip("127.0.0.2")));
        assert!(range("0.0.0.0/0").contains(&ip("8.8.8.8")));
        assert!(range("fd00::/8").contains(&ip("fd12:3456::1")));
        assert!(!range("fd00::/8").contains(&ip("fe80::1")));
        assert!(range("::1").contains(&ip("::1")));
        // Bits past the prefix are ignored, as in most tools' ranges.
        assert_eq!(range("10.1.2.3/8"), range("10.0.0.0/8"));
    }

    #[test]
    fn bad_ranges_are_refused_naming_them() {
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/-1",
            "localhost",
            "10.0.0.0/8/8",
            "256.0.0.0/8",
            "10.0.0.0 /8",
        ] {
            let why = parse_range(bad).expect_err(bad);
            assert!(why.contains("is not an address range"), "{bad}: {why}");
            assert!(why.contains(&format!("{:?}", bad.trim())), "{bad}: {why}");
        }
    }

    fn users_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
        let path = dir.path().join("users.yaml");
        std::fs::write(&path, "alice@example.com: {role: admin}\n").expect("write");
        path
    }

    #[test]
    fn options_are_checked_together() {
        let dir = tempfile::tempdir().expect("a directory");
        let users = users_file(&dir);
        let proxy = ProxySignOn::new(
            "X-Forwarded-Email",
            &["10.0.0.0/8, fd00::/8".to_owned(), "127.0.0.1".to_owned()],
            &users,
        )
        .expect("sign-on");
        assert!(proxy.trusts(ip("10.1.1.1")));
        assert!(proxy.trusts(ip("fd00::5")));
        assert!(proxy.trusts(ip("127.0.0.1")));
        assert!(
            proxy.trusts(ip("::ffff:10.1.1.1")),
            "an IPv4 peer on an IPv6 socket"
        );
        assert!(!proxy.trusts(ip("192.168.0.1")));

        let no_range = ProxySignOn::new("X-Forwarded-Email", &[], &users).expect_err("no range");
        assert!(
            no_range.to_string().contains("needs --console-proxy-from"),
            "{no_range}"
        );
        let bad_range = ProxySignOn::new("X-Forwarded-Email", &["10.0.0.0/99".to_owned()], &users)
            .expect_err("a bad range");
        assert!(
            bad_range.to_string().contains("\"10.0.0.0/99\""),
            "{bad_range}"
        );
        let bad_header = ProxySignOn::new("X Forwarded", &["10.0.0.0/8".to_owned()], &users)
            .expect_err("a bad header");
        assert!(
            bad_header.to_string().contains("not a header name"),
            "{bad_header}"
        );
        let many: Vec<String> = (0..=MAX_RANGES).map(|i| format!("10.0.{i}.0/24")).collect();
        let too_many =
            ProxySignOn::new("X-Forwarded-Email", &many, &users).expect_err("too many ranges");
        assert!(too_many.to_string().contains("more than 100"), "{too_many}");
        let no_users = ProxySignOn::new(
            "X-Forwarded-Email",
            &["10.0.0.0/8".to_owned()],
            &dir.path().join("missing.yaml"),
        )
        .expect_err("no users file");
        assert!(no_users.to_string().contains("missing.yaml"), "{no_users}");
    }

    #[test]
    fn the_header_must_name_exactly_one_person() {
        let dir = tempfile::tempdir().expect("a directory");
        let proxy = ProxySignOn::new(
            "X-Forwarded-Email",
            &["10.0.0.0/8".to_owned()],
            &users_file(&dir),
        )
        .expect("sign-on");
        let mut headers = HeaderMap::new();
        assert_eq!(proxy.named(&headers), None);
        headers.insert("x-forwarded-email", " alice@example.com ".parse().unwrap());
        assert_eq!(proxy.named(&headers).as_deref(), Some("alice@example.com"));
        headers.append("x-forwarded-email", "mallory@example.com".parse().unwrap());
        assert_eq!(proxy.named(&headers), None, "two people is none");
        headers.insert("x-forwarded-email", "".parse().unwrap());
        assert_eq!(proxy.named(&headers), None);
    }
}
