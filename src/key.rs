//! The one key the operator's per-store memories use: a store's namespace and name, typed, so no
//! module builds or splits a `"namespace/name"` string of its own.

use std::fmt;

use kube::ResourceExt;

use crate::crd::SessionStore;
use crate::validate::ValidatedStore;

/// A store's namespace and name (displayed `namespace/name`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey {
    pub namespace: String,
    pub name: String,
}

impl StoreKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        StoreKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(store: &SessionStore) -> Self {
        StoreKey::new(store.namespace().unwrap_or_default(), store.name_any())
    }

    pub fn of_validated(store: &ValidatedStore) -> Self {
        StoreKey::new(store.namespace.as_str(), store.name.as_str())
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_namespace_slash_name_and_orders_by_namespace_first() {
        let a = StoreKey::new("apps", "web");
        assert_eq!(a.to_string(), "apps/web");
        assert!(StoreKey::new("a", "z") < StoreKey::new("b", "a"));
    }
}
