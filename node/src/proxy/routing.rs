//! The routing table kept up to date one Service at a time.
//!
//! Why: rebuilding the whole table on every watch event made the proxy's work per event grow
//! with the number of Services (and per Service with the number of slices), so 10,000 Services
//! took minutes to reach it. Here each Service's frontends ([`ServiceRoutes`], computed from that
//! Service alone) are replaced when it or its slices change, and only the frontends it had or
//! has are looked at again.
//!
//! What it owns: settling conflicts — several Services claiming one frontend (two
//! LoadBalancers on one port, say): the first by namespace/name serves it, the others are
//! [`Skipped::Taken`], and when the first goes the next takes over. Pure, like `table`.

use std::collections::{BTreeMap, HashMap};

use super::table::{Frontend, Route, ServiceRoutes, Skipped};

/// A Service's namespace and name.
pub type ServiceKey = (String, String);

/// Every Service's frontends and who serves each.
#[derive(Debug, Default)]
pub struct Routing {
    services: HashMap<ServiceKey, ServiceRoutes>,
    /// Frontend → the Services claiming it, by key (the first serves it).
    claims: HashMap<Frontend, BTreeMap<ServiceKey, Route>>,
}

impl Routing {
    /// Replaces the frontends of Service `key` (empty routes: it is gone); the frontends whose
    /// route may have changed.
    pub fn set(&mut self, key: ServiceKey, routes: ServiceRoutes) -> Vec<Frontend> {
        let old = self.services.remove(&key).unwrap_or_default();
        if old == routes {
            if !routes.routes.is_empty() || !routes.skipped.is_empty() {
                self.services.insert(key, routes);
            }
            return Vec::new();
        }
        let mut touched = Vec::with_capacity(old.routes.len() + routes.routes.len());
        for (frontend, _) in &old.routes {
            if let Some(claims) = self.claims.get_mut(frontend) {
                claims.remove(&key);
                if claims.is_empty() {
                    self.claims.remove(frontend);
                }
            }
            touched.push(*frontend);
        }
        for (frontend, route) in &routes.routes {
            self.claims.entry(*frontend).or_default().insert(key.clone(), route.clone());
            touched.push(*frontend);
        }
        if !routes.routes.is_empty() || !routes.skipped.is_empty() {
            self.services.insert(key, routes);
        }
        touched.sort();
        touched.dedup();
        touched
    }

    /// The route served on `frontend`: the first claiming Service's.
    pub fn route(&self, frontend: &Frontend) -> Option<&Route> {
        self.claims.get(frontend)?.values().next()
    }

    /// The Services known (with frontends or reasons for having none here).
    pub fn keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// What Service `key` wants but is not served here: its own reasons, and frontends
    /// another Service took.
    pub fn skipped(&self, key: &ServiceKey) -> Vec<Skipped> {
        let Some(routes) = self.services.get(key) else { return Vec::new() };
        let mut skipped = routes.skipped.clone();
        for (frontend, route) in &routes.routes {
            if let Some(winner) = self.route(frontend).filter(|w| w.service != route.service) {
                skipped.push(Skipped::Taken {
                    service: route.service.clone(),
                    frontend: *frontend,
                    by: winner.service.clone(),
                });
            }
        }
        skipped
    }

    /// The whole table (tests; the proxy follows [`Routing::set`]'s changes).
    #[cfg(test)]
    pub fn table(&self) -> super::table::Table {
        let mut table = super::table::Table::default();
        for (frontend, claims) in &self.claims {
            if let Some(route) = claims.values().next() {
                table.routes.insert(*frontend, route.clone());
            }
        }
        let mut keys: Vec<&ServiceKey> = self.services.keys().collect();
        keys.sort();
        for key in keys {
            table.skipped.extend(self.skipped(key));
        }
        table
    }
}
