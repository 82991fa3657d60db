//! The hash table a snapshot keeps its compiled flags and segments in, found by key.

use std::sync::Arc;

/// Compiled flags or segments by key: a hash table of `Arc`s, each holding its own key.
///
/// Applying a change clones the table, and dropping the old snapshot drops it; one reference
/// count per entry (rather than one for an `Arc<str>` map key and one for the value) halves what
/// both cost. A lookup reads the key from the flag it finds, which evaluation reads next anyway.
///
/// Keys come from our own server or a validated document, never from the calling service, so
/// the fast non-cryptographic Fx hasher is safe here: nobody can choose keys to force collisions.
#[derive(Debug)]
pub(crate) struct Table<V> {
    table: hashbrown::HashTable<Arc<V>>,
}

/// What a [`Table`] holds: something with a key.
pub(crate) trait Keyed {
    fn key(&self) -> &str;
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Table {
            table: self.table.clone(),
        }
    }
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            table: hashbrown::HashTable::new(),
        }
    }
}

impl<V: Keyed> Table<V> {
    #[inline(always)]
    fn hash(key: &str) -> u64 {
        use std::hash::BuildHasher;
        rustc_hash::FxBuildHasher.hash_one(key)
    }

    /// The entry with key `key`.
    #[inline(always)]
    pub(crate) fn get(&self, key: &str) -> Option<&Arc<V>> {
        self.table
            .find(Self::hash(key), |v| crate::keys::eq(key, v.key()))
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Adds `value`, replacing (and returning) the entry with its key.
    pub(crate) fn insert(&mut self, value: Arc<V>) -> Option<Arc<V>> {
        let hash = Self::hash(value.key());
        match self
            .table
            .entry(hash, |v| v.key() == value.key(), |v| Self::hash(v.key()))
        {
            hashbrown::hash_table::Entry::Occupied(mut entry) => {
                Some(std::mem::replace(entry.get_mut(), value))
            }
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert(value);
                None
            }
        }
    }

    /// Removes (and returns) the entry with key `key`.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Arc<V>> {
        let entry = self.table.find_entry(Self::hash(key), |v| v.key() == key);
        entry.ok().map(|entry| entry.remove().0)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<V>> {
        self.table.iter()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.table.iter().map(|v| v.key())
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}
