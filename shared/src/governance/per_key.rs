//! One shared value per key (a called method, a served method, a route),
//! made on first use.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    sync::{Arc, PoisonError, RwLock},
};

/// Values per key behind a read lock: a call only reads; the write lock is
/// taken once per new key.
#[derive(Debug)]
pub struct PerKey<K, V>(RwLock<HashMap<K, Arc<V>>>);

impl<K, V> Default for PerKey<K, V> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<K: Eq + Hash, V> PerKey<K, V> {
    /// The value of `key`, made by `make` when it has none yet.
    pub fn get_or_insert_with<Q>(&self, key: &Q, make: impl FnOnce() -> V) -> Arc<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned + ?Sized,
        Q::Owned: Into<K>,
    {
        if let Some(value) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return value.clone();
        }
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned().into())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_one_value_made_once() {
        let per_route: PerKey<String, u32> = PerKey::default();
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            made.get()
        };
        let first = per_route.get_or_insert_with("/a", make);
        let again = per_route.get_or_insert_with("/a", make);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(*per_route.get_or_insert_with("/b", make), 2);
        assert_eq!(made.get(), 2, "made once per key");
    }
}
