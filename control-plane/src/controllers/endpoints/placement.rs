//! Where each endpoint of a Service goes among its EndpointSlices — the pure part of the
//! EndpointSlice reconciler. Endpoints are grouped by the port set their pod resolves to (one
//! family of slices per port set); an endpoint already in a slice stays there (updated in
//! place), new ones fill slices with room before new slices are made, at most
//! [`MAX_ENDPOINTS_PER_SLICE`] per slice; slices left empty or of a vanished port set go. A
//! Service without any endpoint keeps one empty placeholder slice, as Kubernetes does.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::discovery::v1::Endpoint;

use super::addresses::PortKey;

/// kube-controller-manager's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// A slice as it exists now.
#[derive(Debug, Clone, PartialEq)]
pub struct Existing {
    pub name: String,
    pub ports: Vec<PortKey>,
    pub endpoints: Vec<Endpoint>,
}

/// A slice as it should be: `name` is `None` for a slice to create.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub name: Option<String>,
    pub ports: Vec<PortKey>,
    pub endpoints: Vec<Endpoint>,
}

/// The outcome of [`plan`]: the slices to keep or create, and the names to delete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub slices: Vec<Planned>,
    pub delete: Vec<String>,
}

/// What identifies an endpoint across passes: its pod's uid, or its first address.
fn identity(ep: &Endpoint) -> String {
    ep.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_else(|| ep.addresses.join(","))
}

/// Places `desired` endpoints (per port set) into `existing` slices (see the module docs).
pub fn plan(desired: BTreeMap<Vec<PortKey>, Vec<Endpoint>>, mut existing: Vec<Existing>, max: usize) -> Plan {
    let max = max.max(1);
    existing.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Plan::default();
    let mut used = HashSet::new();
    for (ports, endpoints) in desired.into_iter().filter(|(_, eps)| !eps.is_empty()) {
        // Kept in the desired order, so new slices fill in that order.
        let order: Vec<String> = endpoints.iter().map(identity).collect();
        let mut wanted: HashMap<String, Endpoint> = endpoints.into_iter().map(|e| (identity(&e), e)).collect();
        let mut family = Vec::new();
        for slice in existing.iter().filter(|s| s.ports == ports) {
            used.insert(slice.name.clone());
            let kept: Vec<Endpoint> = slice.endpoints.iter().filter_map(|e| wanted.remove(&identity(e))).collect();
            family.push(Planned { name: Some(slice.name.clone()), ports: ports.clone(), endpoints: kept });
        }
        let mut rest = order.iter().filter_map(|id| wanted.remove(id));
        for slice in &mut family {
            while slice.endpoints.len() < max {
                let Some(e) = rest.next() else { break };
                slice.endpoints.push(e);
            }
        }
        let rest: Vec<Endpoint> = rest.collect();
        for chunk in rest.chunks(max) {
            family.push(Planned { name: None, ports: ports.clone(), endpoints: chunk.to_vec() });
        }
        for slice in family {
            match slice.name {
                Some(name) if slice.endpoints.is_empty() => out.delete.push(name),
                _ => out.slices.push(slice),
            }
        }
    }
    let unused = existing.iter().filter(|s| !used.contains(&s.name));
    out.delete.extend(unused.map(|s| s.name.clone()));
    if out.slices.is_empty() {
        // The placeholder: reuse an empty port-less slice when there is one.
        let reuse = existing.iter().find(|s| s.endpoints.is_empty() && s.ports.is_empty()).map(|s| s.name.clone());
        out.delete.retain(|n| Some(n) != reuse.as_ref());
        out.slices.push(Planned { name: reuse, ports: Vec::new(), endpoints: Vec::new() });
    }
    out.delete.sort();
    out.delete.dedup();
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;

    use super::*;

    fn ep(i: usize) -> Endpoint {
        Endpoint {
            addresses: vec![format!("10.0.{}.{}", i / 250, i % 250)],
            target_ref: Some(ObjectReference { uid: Some(format!("uid-{i:04}")), ..ObjectReference::default() }),
            ..Endpoint::default()
        }
    }

    fn http() -> Vec<PortKey> {
        vec![("http".into(), 8080, "TCP".into(), None)]
    }

    #[test]
    fn splits_at_the_limit_and_fills_before_creating() {
        let desired = BTreeMap::from([(http(), (0..250).map(ep).collect())]);
        let p = plan(desired, Vec::new(), 100);
        let sizes: Vec<usize> = p.slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert!(p.slices.iter().all(|s| s.name.is_none()) && p.delete.is_empty());

        // Existing slice with 2 endpoints, one gone: the kept one stays, new ones fill it.
        let existing = vec![Existing { name: "web-a".into(), ports: http(), endpoints: vec![ep(1), ep(2)] }];
        let desired = BTreeMap::from([(http(), vec![ep(2), ep(3), ep(4)])]);
        let p = plan(desired, existing, 3);
        assert_eq!(p.slices.len(), 1);
        assert_eq!(p.slices[0].name.as_deref(), Some("web-a"));
        assert_eq!(p.slices[0].endpoints, vec![ep(2), ep(3), ep(4)]);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn empty_and_stale_slices_go_and_a_placeholder_stays() {
        let other = vec![("other".into(), 1, "TCP".into(), None)];
        let existing = vec![
            Existing { name: "web-a".into(), ports: http(), endpoints: vec![ep(1)] },
            Existing { name: "web-b".into(), ports: other, endpoints: vec![ep(2)] },
        ];
        let p = plan(BTreeMap::from([(http(), vec![ep(1)])]), existing.clone(), 100);
        assert_eq!(p.delete, ["web-b"]);
        assert_eq!(p.slices.len(), 1);
        // Nothing desired: both go, one placeholder is created.
        let p = plan(BTreeMap::new(), existing, 100);
        assert_eq!(p.delete, ["web-a", "web-b"]);
        assert_eq!(p.slices, [Planned { name: None, ports: Vec::new(), endpoints: Vec::new() }]);
        // An existing placeholder is reused.
        let placeholder = vec![Existing { name: "web-p".into(), ports: Vec::new(), endpoints: Vec::new() }];
        let p = plan(BTreeMap::new(), placeholder, 100);
        assert!(p.delete.is_empty());
        assert_eq!(p.slices[0].name.as_deref(), Some("web-p"));
    }
}
