//! Tokens and what they may do (DESIGN.md section 4).
//!
//! A token is a random 256-bit secret, shown once when created; the store keeps its SHA-256.
//! A `client` token is the exception: it is embedded in web pages and apps, so it is not a
//! secret, and the store keeps it too, so that it can be shown again.
//! Roles: `admin` may do everything, including managing tokens and environments; `editor`
//! reads and writes in its one environment; `sdk` may only `Watch`, `ReportMetrics` and
//! evaluate over OFREP in its one environment; `client` may only evaluate the `client_side`
//! flags of its one environment over OFREP and passes no gRPC access check. A fresh data
//! directory gets an admin token in the 0600 file `<data-dir>/admin.token`.
//!
//! Tokens are held in memory and checked there. On a store other flagstaffd processes share
//! (PostgreSQL), a token this one has not heard of yet is looked up in the store before it is
//! refused ([`lookup`]).

mod lookup;

pub use lookup::{LookupCounts, CONCURRENT_LOOKUPS, LOOKUPS_PER_SECOND, REMEMBER_UNKNOWN};

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};

use crate::error::ServerError;
use crate::storage::{now_ms, random_id, Role, Store, TokenRecord};

use self::lookup::{Found, Key, Lookups, Next};

/// The file a fresh data directory's admin token is written to.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// What a request needs its token to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Managing tokens and environments.
    Admin,
    /// Reading an environment's documents, history and clients.
    Read(&'a str),
    /// Changing an environment's documents.
    Write(&'a str),
    /// The SDK stream and metrics of an environment.
    Sync(&'a str),
}

/// Which flags a token may evaluate over OFREP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Every flag (an `sdk` token).
    All,
    /// Only flags marked `client_side` (a `client` token).
    ClientSide,
}

impl TokenRecord {
    /// Whether this token allows `access`. A `client` token allows none: it only evaluates
    /// over OFREP (see [`evaluation_scope`](Self::evaluation_scope)).
    pub fn allows(&self, access: Access<'_>) -> bool {
        if self.revoked {
            return false;
        }
        let own = |env: &str| self.environment.as_deref() == Some(env);
        match (self.role, access) {
            (Role::Admin, _) => true,
            (Role::Editor, Access::Read(env) | Access::Write(env)) => own(env),
            (Role::Sdk, Access::Sync(env)) => own(env),
            _ => false,
        }
    }

    /// The environment and visibility of OFREP evaluation with this token; `None` for roles
    /// that must not evaluate over HTTP (`admin`, `editor`) and for a revoked token.
    pub fn evaluation_scope(&self) -> Option<(&str, Visibility)> {
        if self.revoked {
            return None;
        }
        let visibility = match self.role {
            Role::Sdk => Visibility::All,
            Role::Client => Visibility::ClientSide,
            Role::Admin | Role::Editor => return None,
        };
        Some((self.environment.as_deref()?, visibility))
    }
}

/// The SHA-256 of `secret` in lower-case hex: how tokens are stored and looked up.
pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// `bytes` in lower-case hex. Written out by hand: a `format!` per byte costs more than the
/// SHA-256 it encodes, on every request that authenticates.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * bytes.len());
    for b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

fn new_secret() -> String {
    format!("fs_{}{}", random_id(), random_id())
}

/// The longest token id looked up in the store.
const LONGEST_ID: usize = 64;

/// The refusal of a token nobody created.
const UNKNOWN: &str = "unknown token";

/// The refusal of a token not held in memory when too many such are being looked up.
const TOO_MANY_LOOKUPS: &str = "unknown token: this flagstaffd has not heard of it, and is \
     looking up too many unknown tokens in the database to look this one up now; a token just \
     created through another flagstaffd works here within seconds, retry then";

/// The refusal of a token not held in memory when the database cannot be asked about it.
const LOOKUP_FAILED: &str = "this flagstaffd has not heard of the token and cannot look it up \
     in the database now; retry shortly";

/// The tokens by hash of their secret, as held in memory.
type Held = RwLock<HashMap<String, TokenRecord>>;

/// The tokens, by hash of their secret.
#[derive(Debug)]
pub struct Tokens<S> {
    store: Arc<S>,
    /// Read on every request, written when a token is created, revoked or looked up. Shared
    /// with the blocking threads of lookups, which add what they found.
    by_hash: Arc<Held>,
    /// On a store other flagstaffd processes share: looking up there the tokens not held here.
    lookups: Option<Arc<Lookups>>,
    /// Serialises [`Tokens::create_named`], so two tokens cannot take the same name at once.
    /// A std mutex: held on a blocking thread for one creation, never across an await.
    naming: Mutex<()>,
    /// Counts revocations, so that streams holding a token notice when it is revoked.
    revocations: tokio::sync::watch::Sender<u64>,
}

impl<S: Store> Tokens<S> {
    /// Loads the tokens of `store`.
    pub fn load(store: Arc<S>) -> Result<Tokens<S>, ServerError> {
        let by_hash = store
            .tokens()?
            .into_iter()
            .map(|t| (t.hash.clone(), t))
            .collect();
        let lookups = store.is_shared().then(|| Arc::new(Lookups::new()));
        Ok(Tokens {
            store,
            by_hash: Arc::new(RwLock::new(by_hash)),
            lookups,
            naming: Mutex::new(()),
            revocations: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Reads the tokens again from the store, which another flagstaffd on the same database
    /// may have changed: tokens created there are accepted here, and streams holding a token
    /// revoked there are told ([`revocations`](Self::revocations)). Tokens are only ever
    /// created or revoked, never deleted or restored, so what was read is merged in: a read
    /// older than a token this flagstaffd just created or revoked changes nothing of it.
    pub fn reload(&self) -> Result<(), ServerError> {
        let stored = self.store.tokens()?;
        let mut map = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        let mut revoked = false;
        for token in stored {
            match map.get_mut(&token.hash) {
                None => {
                    map.insert(token.hash.clone(), token);
                }
                Some(held) if token.revoked && !held.revoked => {
                    held.revoked = true;
                    held.client_secret = None;
                    revoked = true;
                }
                Some(_) => {}
            }
        }
        drop(map);
        if revoked {
            self.revocations.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// Whether no token was ever created: the data directory is fresh.
    pub fn is_empty(&self) -> bool {
        self.by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Creates a token; returns it and its secret, which is stored for a `client` token only.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        environment: Option<&str>,
    ) -> Result<(TokenRecord, String), ServerError> {
        self.create_by(name, role, environment, "")
    }

    /// [`create`](Self::create), recording the name of the token that asked.
    fn create_by(
        &self,
        name: &str,
        role: Role,
        environment: Option<&str>,
        created_by: &str,
    ) -> Result<(TokenRecord, String), ServerError> {
        if name.trim().is_empty() {
            return Err(ServerError::Invalid("a token needs a name".to_owned()));
        }
        match (role, environment) {
            (Role::Admin, Some(_)) => {
                return Err(ServerError::Invalid(
                    "an admin token covers every environment; leave out the environment".to_owned(),
                ))
            }
            (Role::Editor | Role::Sdk | Role::Client, None) => {
                return Err(ServerError::Invalid(format!(
                    "{} token needs the environment it may use",
                    match role {
                        Role::Sdk => "an sdk",
                        Role::Client => "a client",
                        _ => "an editor",
                    }
                )))
            }
            _ => {}
        }
        let secret = new_secret();
        let record = TokenRecord {
            id: random_id(),
            name: name.to_owned(),
            role,
            environment: environment.map(str::to_owned),
            hash: hash(&secret),
            created_ms: now_ms(),
            revoked: false,
            created_by: created_by.to_owned(),
            client_secret: (role == Role::Client).then(|| secret.clone()),
        };
        self.store.create_token(&record)?;
        self.by_hash
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.hash.clone(), record.clone());
        Ok((record, secret))
    }

    /// Creates a token as the Admin API does: its name must match the key pattern and be
    /// unused among tokens that are not revoked (it is the actor audit entries name). Returns
    /// the token and its secret, which is stored for a `client` token only.
    pub fn create_named(
        &self,
        name: &str,
        role: Role,
        environment: Option<&str>,
        created_by: &str,
    ) -> Result<(TokenRecord, String), ServerError> {
        if !name.trim().is_empty() && !flagstaff_engine::is_valid_key(name) {
            return Err(ServerError::Invalid(format!(
                "{name:?} is not a valid token name: use 1 to 128 lower-case letters, digits, \
                 '.', '_' or '-', starting with a letter or digit"
            )));
        }
        // Nothing is left half-done by a panic while naming: a poisoned lock is still usable.
        let _naming = self.naming.lock().unwrap_or_else(|p| p.into_inner());
        if self.list().iter().any(|t| !t.revoked && t.name == name) {
            return Err(ServerError::AlreadyExists(format!(
                "a token named {name:?} exists; revoke it first or choose another name"
            )));
        }
        self.create_by(name, role, environment, created_by)
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<TokenRecord> {
        let mut all: Vec<_> = self
            .by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        all
    }

    /// The client token `id` and its secret, shown again: `NotFound` for an unknown id,
    /// `Precondition` for a token of another role (stored as a hash only), a revoked one, or
    /// a client token whose secret was not kept.
    pub fn client_token(&self, id: &str) -> Result<(TokenRecord, String), ServerError> {
        let map = self.by_hash.read().unwrap_or_else(|p| p.into_inner());
        let Some(token) = map.values().find(|t| t.id == id) else {
            return Err(ServerError::NotFound(format!("no token {id:?}")));
        };
        if token.role != Role::Client {
            return Err(ServerError::Precondition(format!(
                "token {:?} is not a client token: only client tokens can be shown again; \
                 other tokens are stored as hashes",
                token.name
            )));
        }
        if token.revoked {
            return Err(ServerError::Precondition(format!(
                "client token {:?} is revoked; create a new one",
                token.name
            )));
        }
        let Some(secret) = token.client_secret.clone() else {
            return Err(ServerError::Precondition(format!(
                "the secret of client token {:?} was not kept (it was created before client \
                 tokens could be shown again); revoke it and create a new one",
                token.name
            )));
        };
        Ok((token.clone(), secret))
    }

    /// Revokes the token `id`; it stops working at once. A client token's kept secret is
    /// dropped: it will never be shown again.
    pub fn revoke(&self, id: &str) -> Result<TokenRecord, ServerError> {
        let mut map = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        let Some(token) = map.values_mut().find(|t| t.id == id) else {
            return Err(ServerError::NotFound(format!("no token {id:?}")));
        };
        let mut revoked = token.clone();
        revoked.revoked = true;
        revoked.client_secret = None;
        self.store.put_token(&revoked)?;
        *token = revoked.clone();
        drop(map);
        self.revocations.send_modify(|n| *n += 1);
        Ok(revoked)
    }

    /// Revokes every token of `environment`, durably; they stop working at once and their
    /// streams end. Deleting an environment does this first, so that its tokens never work
    /// for a new environment of the same name (a crash between the two leaves the tokens
    /// revoked and the environment in place, never the reverse). Returns how many it revoked.
    pub fn revoke_environment(&self, environment: &str) -> Result<usize, ServerError> {
        // Written with one sync, outside the map's lock, so that authentication never waits
        // for the disk. No token of the environment is created meanwhile: tokens are created
        // while their environment cannot be deleted (Environments::while_exists).
        let revoked: Vec<TokenRecord> = self
            .by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| !t.revoked && t.environment.as_deref() == Some(environment))
            .map(|t| TokenRecord {
                revoked: true,
                client_secret: None,
                ..t.clone()
            })
            .collect();
        if revoked.is_empty() {
            return Ok(0);
        }
        self.store.put_tokens(&revoked)?;
        let ids: std::collections::HashSet<&str> = revoked.iter().map(|t| t.id.as_str()).collect();
        let mut map = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        for token in map.values_mut() {
            if ids.contains(token.id.as_str()) {
                token.revoked = true;
                token.client_secret = None;
            }
        }
        drop(map);
        self.revocations.send_modify(|n| *n += 1);
        Ok(revoked.len())
    }

    /// A receiver woken whenever a token is revoked: streams then check
    /// [`is_revoked`](Self::is_revoked) for their own.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Whether the token `id` is revoked (or does not exist).
    pub fn is_revoked(&self, id: &str) -> bool {
        !self
            .by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|t| t.id == id && !t.revoked)
    }

    /// The token `id`, revoked or not.
    pub fn by_id(&self, id: &str) -> Option<TokenRecord> {
        self.by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// The token whose secret is `secret`, if it exists and is not revoked: as held in
    /// memory, or, on a store other flagstaffd processes share, as looked up there when it is
    /// not (on a blocking thread; bounded, see [`lookup`]). A token held is answered at once,
    /// without waiting for anything.
    pub async fn authenticate(&self, secret: &str) -> Result<TokenRecord, ServerError> {
        let hash = hash(secret);
        if let Some(held) = self.held(&hash) {
            return held;
        }
        match self.look_up(Key::Hash(hash)).await? {
            Some(token) => usable(&token).map(|()| token),
            None => Err(ServerError::Unauthenticated(UNKNOWN.to_owned())),
        }
    }

    /// [`authenticate`](Self::authenticate) from memory alone: what this flagstaffd has
    /// heard of. All there is on a store no other process writes (sled).
    pub fn authenticate_held(&self, secret: &str) -> Result<TokenRecord, ServerError> {
        self.held(&hash(secret))
            .unwrap_or_else(|| Err(ServerError::Unauthenticated(UNKNOWN.to_owned())))
    }

    /// The token `id`, revoked or not: as held in memory, or, on a store other flagstaffd
    /// processes share, as looked up there when it is not.
    pub async fn find(&self, id: &str) -> Result<Option<TokenRecord>, ServerError> {
        if let Some(token) = self.by_id(id) {
            return Ok(Some(token));
        }
        // Ids are 32 hex digits: a longer one names no token, and is not remembered as unknown.
        if id.len() > LONGEST_ID {
            return Ok(None);
        }
        self.look_up(Key::Id(id.to_owned())).await
    }

    /// The token whose secret hashes to `hash` as held in memory, if it is: itself, or why it
    /// may not be used.
    fn held(&self, hash: &str) -> Option<Result<TokenRecord, ServerError>> {
        let map = self.by_hash.read().unwrap_or_else(|p| p.into_inner());
        let token = map.get(hash)?;
        Some(usable(token).map(|()| token.clone()))
    }

    /// The token `key` names, looked up in a store other flagstaffd processes share and held
    /// in memory from then on; `None` when the store holds none, or is shared with nobody.
    /// Refused at once when too many lookups are under way or began this second.
    async fn look_up(&self, key: Key) -> Result<Option<TokenRecord>, ServerError> {
        let Some(lookups) = &self.lookups else {
            return Ok(None);
        };
        let mut answer = match lookups.begin(key) {
            Next::RecentlyUnknown => return Ok(None),
            Next::Busy => return Err(ServerError::Unauthenticated(TOO_MANY_LOOKUPS.to_owned())),
            Next::Wait(answer) => answer,
            Next::Lead(lookup) => {
                let answer = lookup.answer();
                let (store, held) = (self.store.clone(), self.by_hash.clone());
                // Not awaited to the end by a request that goes away: the others waiting for
                // it, and the next requests, still get its answer.
                tokio::task::spawn_blocking(move || {
                    let found = match store.token(lookup.key().as_store()) {
                        Ok(Some(token)) => Found::Token(hold(&held, token)),
                        Ok(None) => Found::Unknown,
                        Err(e) => Found::Failed(e.to_string()),
                    };
                    lookup.finish(found);
                });
                answer
            }
        };
        let found = match answer.wait_for(Option::is_some).await {
            Ok(found) => found.clone(),
            Err(_) => None,
        };
        match found {
            Some(Found::Token(token)) => Ok(Some(token)),
            Some(Found::Unknown) => Ok(None),
            Some(Found::Failed(why)) => {
                tracing::warn!(error = %why, "cannot look up a token in the database");
                Err(ServerError::Unavailable(LOOKUP_FAILED.to_owned()))
            }
            None => Err(ServerError::Unavailable(LOOKUP_FAILED.to_owned())),
        }
    }

    /// How tokens not held in memory were looked up since the server started; `None` on a
    /// store no other process writes, where none is.
    pub fn lookup_counts(&self) -> Option<LookupCounts> {
        self.lookups.as_ref().map(|lookups| lookups.counts())
    }

    /// Mints an admin token and writes its secret to `<data_dir>/admin.token`, readable by
    /// the owner only. Returns the file's path.
    pub fn mint_admin_token_file(
        &self,
        data_dir: &Path,
        name: &str,
    ) -> Result<PathBuf, ServerError> {
        let (_, secret) = self.create(name, Role::Admin, None)?;
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        write_private(&path, &format!("{secret}\n")).map_err(|e| {
            ServerError::Invalid(format!(
                "cannot write the admin token to {}: {e}",
                path.display()
            ))
        })?;
        Ok(path)
    }
}

/// Whether `token` may be used: not if it is revoked.
fn usable(token: &TokenRecord) -> Result<(), ServerError> {
    match token.revoked {
        false => Ok(()),
        true => Err(ServerError::Unauthenticated(
            "the token has been revoked".to_owned(),
        )),
    }
}

/// Holds `token`, read from the store, in `held`, unless a token of its hash is held already
/// (held since, and as new as the read or newer: tokens are only ever created and revoked);
/// returns the token as held.
fn hold(held: &Held, token: TokenRecord) -> TokenRecord {
    let mut map = held.write().unwrap_or_else(|p| p.into_inner());
    map.entry(token.hash.clone()).or_insert(token).clone()
}

/// Writes `text` to a new file readable and writable by its owner only, replacing any old one.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hashes_are_sha256_in_lower_case_hex() {
        // Tokens already stored were hashed so: the encoding must not change.
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
