//! One place for what a store's pods are called and when one counts as ready: the StatefulSet names
//! them `<store>-<ordinal>`, and the cache, the HA steps, the rollout and the diagnosis all parse,
//! build and check those names the same way. No controller types here (only `k8s_openapi`).

use std::collections::BTreeMap;
use std::fmt::Display;

use k8s_openapi::api::core::v1::Pod;

use crate::vocabulary::ConditionStatus;

/// The name the StatefulSet `<store>` gives its pod with this ordinal: `<store>-<ordinal>`.
pub fn pod_name(store: &str, ordinal: impl Display) -> String {
    format!("{store}-{ordinal}")
}

/// The names a store's pods have (StatefulSet ordinals `0..replicas`).
pub fn pod_names(store: &str, replicas: i32) -> impl Iterator<Item = String> + '_ {
    (0..replicas.max(0)).map(move |ordinal| pod_name(store, ordinal))
}

/// The ordinal of a pod named `<store>-<ordinal>` (decimal digits only); `None` for any other name.
pub fn ordinal(store: &str, pod: &str) -> Option<u32> {
    let digits = pod.strip_prefix(store)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `pod` is named `<store>-<ordinal>`.
pub fn is_pod_of(pod: &str, store: &str) -> bool {
    ordinal(store, pod).is_some()
}

/// Whether the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
        })
}

/// A label selector (`k=v,k=v`) matching every one of these labels.
pub fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_the_store_name_only() {
        assert_eq!(ordinal("checkout", "checkout-2"), Some(2));
        assert_eq!(ordinal("checkout", "checkout-x"), None);
        assert_eq!(ordinal("checkout", "checkout2-1"), None);
        assert_eq!(ordinal("a", "a-1-0"), None);
        assert_eq!(ordinal("checkout", "checkout-"), None);
    }

    #[test]
    fn names_and_selectors() {
        assert_eq!(pod_name("checkout", 3), "checkout-3");
        assert_eq!(
            pod_names("checkout", 2).collect::<Vec<_>>(),
            ["checkout-0", "checkout-1"]
        );
        assert!(is_pod_of("checkout-10", "checkout"));
        assert!(!is_pod_of("checkout-api-1", "checkout"));
        let labels = BTreeMap::from([("a".to_string(), "1".to_string()), ("b".into(), "2".into())]);
        assert_eq!(label_selector(&labels), "a=1,b=2");
    }
}
