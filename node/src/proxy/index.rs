//! Which EndpointSlices belong to which Service, kept from watch events.
//!
//! Why: the reflector's store answers "this slice" but not "this Service's slices"; scanning
//! every slice for every Service that changed is what made churn of many Services quadratic.
//! The index also remembers each slice's Service, so a slice relabelled to another Service (or
//! deleted) marks the Service it left as changed too.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::routing::ServiceKey;
use super::table::{namespace, owner};

/// EndpointSlices by the Service they belong to.
#[derive(Debug, Default)]
pub struct SliceIndex {
    /// Slice (namespace, name) → its Service.
    owner: HashMap<(String, String), ServiceKey>,
    /// Service → its slices' names.
    slices: HashMap<ServiceKey, BTreeSet<String>>,
}

impl SliceIndex {
    /// Records `slice` as it is now; the Services whose slices changed (the one it belongs to,
    /// and the one it left).
    pub fn apply(&mut self, slice: &EndpointSlice) -> Vec<ServiceKey> {
        let id = id(slice);
        let now = owner(slice).map(|(ns, svc)| (ns.to_owned(), svc.to_owned()));
        let mut changed = Vec::with_capacity(2);
        if let Some(before) = self.forget(&id)
            && Some(&before) != now.as_ref()
        {
            changed.push(before);
        }
        if let Some(now) = now {
            self.slices.entry(now.clone()).or_default().insert(id.1.clone());
            self.owner.insert(id, now.clone());
            changed.push(now);
        }
        changed
    }

    /// Forgets a deleted slice; the Service it belonged to.
    pub fn delete(&mut self, slice: &EndpointSlice) -> Option<ServiceKey> {
        self.forget(&id(slice))
    }

    /// Starts over from a full list.
    pub fn reset(&mut self, slices: &[Arc<EndpointSlice>]) {
        *self = SliceIndex::default();
        for slice in slices {
            self.apply(slice);
        }
    }

    /// The names of Service `key`'s slices (in its namespace).
    pub fn slices_of(&self, key: &ServiceKey) -> impl Iterator<Item = &str> {
        self.slices.get(key).into_iter().flatten().map(String::as_str)
    }

    fn forget(&mut self, id: &(String, String)) -> Option<ServiceKey> {
        let before = self.owner.remove(id)?;
        if let Some(names) = self.slices.get_mut(&before) {
            names.remove(&id.1);
            if names.is_empty() {
                self.slices.remove(&before);
            }
        }
        Some(before)
    }
}

fn id(slice: &EndpointSlice) -> (String, String) {
    (namespace(&slice.metadata).to_owned(), slice.metadata.name.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn slice(name: &str, service: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": [],
        }))
        .expect("slice")
    }

    fn key(svc: &str) -> ServiceKey {
        ("ns".into(), svc.into())
    }

    #[test]
    fn slices_follow_their_service_label_and_a_move_touches_both_services() {
        let mut index = SliceIndex::default();
        assert_eq!(index.apply(&slice("a-1", "a")), [key("a")]);
        assert_eq!(index.apply(&slice("a-2", "a")), [key("a")]);
        assert_eq!(index.slices_of(&key("a")).collect::<Vec<_>>(), ["a-1", "a-2"]);
        assert_eq!(index.apply(&slice("a-2", "b")), [key("a"), key("b")], "relabelled: both change");
        assert_eq!(index.slices_of(&key("a")).collect::<Vec<_>>(), ["a-1"]);
        assert_eq!(index.delete(&slice("a-1", "a")), Some(key("a")));
        assert_eq!(index.slices_of(&key("a")).count(), 0);
        assert_eq!(index.delete(&slice("gone", "a")), None);
        index.reset(&[Arc::new(slice("c-1", "c"))]);
        assert_eq!(index.slices_of(&key("b")).count(), 0, "reset forgets what the list lacks");
        assert_eq!(index.slices_of(&key("c")).collect::<Vec<_>>(), ["c-1"]);
    }
}
