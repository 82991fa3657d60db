//! [`Backend`]: whichever of the two stores flagstaffd was started on, as one [`Store`].

use std::time::Duration;

use super::{
    Announcements, AuditEntry, AuditHead, BackupRecord, Change, Damage, Documents,
    EnvironmentRecord, FlagUsage, GuardTally, Instance, Leadership, Locked, PgStore, Readable,
    RestoredEnvironment, RolloutRecord, SessionRecord, SledStore, Store, StoreError, TokenKey,
    TokenRecord, TICKET_KEY_BYTES,
};

/// The store flagstaffd runs on: sled in its data directory, or PostgreSQL.
#[derive(Debug)]
pub enum Backend {
    /// The embedded sled store.
    Sled(SledStore),
    /// The PostgreSQL store.
    Postgres(PgStore),
}

/// Calls the method on whichever store `self` is.
macro_rules! each_store {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Backend::Sled($store) => $call,
            Backend::Postgres($store) => $call,
        }
    };
}

impl Store for Backend {
    fn kind(&self) -> &'static str {
        each_store!(self, s => s.kind())
    }

    fn environment_records(
        &self,
    ) -> Result<Vec<(String, Readable<EnvironmentRecord>)>, StoreError> {
        each_store!(self, s => s.environment_records())
    }

    fn check(&self) -> Result<Vec<Damage>, StoreError> {
        each_store!(self, s => s.check())
    }

    fn remove_damaged(&self, damage: &Damage) -> Result<(), StoreError> {
        each_store!(self, s => s.remove_damaged(damage))
    }

    fn put_environment(&self, record: &EnvironmentRecord) -> Result<(), StoreError> {
        each_store!(self, s => s.put_environment(record))
    }

    fn visit_audit(
        &self,
        environment: &str,
        visit: &mut dyn FnMut(Result<AuditEntry, Damage>),
    ) -> Result<(), StoreError> {
        each_store!(self, s => s.visit_audit(environment, visit))
    }

    fn create_environment(&self, record: &EnvironmentRecord) -> Result<(), StoreError> {
        each_store!(self, s => s.create_environment(record))
    }

    fn delete_environment(&self, environment: &str) -> Result<(), StoreError> {
        each_store!(self, s => s.delete_environment(environment))
    }

    fn documents(&self, environment: &str) -> Result<Documents, StoreError> {
        each_store!(self, s => s.documents(environment))
    }

    fn environment(&self, environment: &str) -> Result<EnvironmentRecord, StoreError> {
        each_store!(self, s => s.environment(environment))
    }

    fn lock_environment(&self, environment: &str) -> Result<Box<dyn Locked + '_>, StoreError> {
        each_store!(self, s => s.lock_environment(environment))
    }

    fn follow(&self) -> Option<Announcements> {
        each_store!(self, s => s.follow())
    }

    fn lead(&self) -> Option<Leadership> {
        each_store!(self, s => s.lead())
    }

    fn resign(&self) {
        each_store!(self, s => s.resign());
    }

    fn add_guard_counts(
        &self,
        environment: &str,
        flag: &str,
        counts: &GuardTally,
    ) -> Result<Option<GuardTally>, StoreError> {
        each_store!(self, s => s.add_guard_counts(environment, flag, counts))
    }

    fn guard_counts(&self, environment: &str) -> Result<Vec<(String, GuardTally)>, StoreError> {
        each_store!(self, s => s.guard_counts(environment))
    }

    fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        each_store!(self, s => s.put_session(session))
    }

    fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        each_store!(self, s => s.session(id_hash))
    }

    fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        each_store!(self, s => s.delete_session(id_hash))
    }

    fn prune_sessions(&self, seen_before_ms: u64) -> Result<usize, StoreError> {
        each_store!(self, s => s.prune_sessions(seen_before_ms))
    }

    fn put_rollout(&self, environment: &str, plan: &RolloutRecord) -> Result<(), StoreError> {
        each_store!(self, s => s.put_rollout(environment, plan))
    }

    fn rollouts(&self, environment: &str) -> Result<Vec<RolloutRecord>, StoreError> {
        each_store!(self, s => s.rollouts(environment))
    }

    fn add_usage(&self, environment: &str, added: &[(&str, FlagUsage)]) -> Result<(), StoreError> {
        each_store!(self, s => s.add_usage(environment, added))
    }

    fn put_instances(&self, replica: &str, instances: &[Instance]) -> Result<bool, StoreError> {
        each_store!(self, s => s.put_instances(replica, instances))
    }

    fn replica_instances(
        &self,
        environment: &str,
        replica: &str,
        silence: Duration,
    ) -> Result<Vec<Instance>, StoreError> {
        each_store!(self, s => s.replica_instances(environment, replica, silence))
    }

    fn prune_instances(&self, remember: Duration) -> Result<(), StoreError> {
        each_store!(self, s => s.prune_instances(remember))
    }

    fn usage(&self, environment: &str) -> Result<Vec<(String, FlagUsage)>, StoreError> {
        each_store!(self, s => s.usage(environment))
    }

    fn changes_since(
        &self,
        environment: &str,
        revision: u64,
    ) -> Result<Option<Vec<Change>>, StoreError> {
        each_store!(self, s => s.changes_since(environment, revision))
    }

    fn audit_head(
        &self,
        environment: &str,
        revision: u64,
    ) -> Result<Option<AuditHead>, StoreError> {
        each_store!(self, s => s.audit_head(environment, revision))
    }

    fn audit_heads(
        &self,
        environment: &str,
        revisions: &[u64],
    ) -> Result<Vec<AuditHead>, StoreError> {
        each_store!(self, s => s.audit_heads(environment, revisions))
    }

    fn history(
        &self,
        environment: &str,
        flag: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        each_store!(self, s => s.history(environment, flag, before, limit))
    }

    fn segment_history(
        &self,
        environment: &str,
        segment: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        each_store!(self, s => s.segment_history(environment, segment, before, limit))
    }

    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        each_store!(self, s => s.put_token(token))
    }

    fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        each_store!(self, s => s.create_token(token))
    }

    fn put_tokens(&self, tokens: &[TokenRecord]) -> Result<(), StoreError> {
        each_store!(self, s => s.put_tokens(tokens))
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        each_store!(self, s => s.tokens())
    }

    fn token(&self, key: TokenKey<'_>) -> Result<Option<TokenRecord>, StoreError> {
        each_store!(self, s => s.token(key))
    }

    fn is_shared(&self) -> bool {
        each_store!(self, s => s.is_shared())
    }

    fn dump(
        &self,
        visit: &mut dyn FnMut(BackupRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        each_store!(self, s => s.dump(visit))
    }

    fn dump_environment(
        &self,
        environment: &str,
        visit: &mut dyn FnMut(BackupRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        each_store!(self, s => s.dump_environment(environment, visit))
    }

    fn restore_environment(&self, restored: &RestoredEnvironment) -> Result<(), StoreError> {
        each_store!(self, s => s.restore_environment(restored))
    }

    fn ticket_key(&self) -> Result<[u8; TICKET_KEY_BYTES], StoreError> {
        each_store!(self, s => s.ticket_key())
    }
}
