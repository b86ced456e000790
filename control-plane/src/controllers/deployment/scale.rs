//! Resizing a Deployment while it is paused or mid-rollout (Kubernetes' `sync.go` `scale`):
//! with one active ReplicaSet it simply takes the new size; with several, the change is
//! shared among them in proportion to their sizes (each ReplicaSet's
//! `deployment.kubernetes.io/max-replicas` annotation says what total it was sized for), the
//! rounding leftover going to the largest.

use jiff::Timestamp;

use super::history;
use super::strategy;
use super::sync::Rollout;
use crate::controllers::ReconcileError;

/// An active ReplicaSet as proportional scaling sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sized {
    /// `spec.replicas`.
    pub spec: i32,
    /// The `max-replicas` annotation, when present.
    pub max_replicas: Option<i32>,
    /// When it was created (newer wins ties when growing, older when shrinking).
    pub created: Option<Timestamp>,
}

/// Go's `integer.RoundToInt32`: half away from zero.
fn round(x: f64) -> i32 {
    x.round() as i32
}

/// The new sizes of `rss` (same order) when a Deployment of `desired` replicas with
/// `max_surge` is resized; `status_replicas` stands in for a missing annotation.
pub fn proportional(desired: i32, max_surge: i32, status_replicas: i32, rss: &[Sized]) -> Vec<i32> {
    let current: i32 = rss.iter().map(|r| r.spec).sum();
    let allowed = if desired > 0 { desired + max_surge } else { 0 };
    let to_add = allowed - current;
    let mut sizes: Vec<i32> = rss.iter().map(|r| r.spec).collect();
    if to_add == 0 || rss.is_empty() {
        return sizes;
    }
    // Largest first; ties go to the newest when growing, to the oldest when shrinking.
    let mut order: Vec<usize> = (0..rss.len()).collect();
    order.sort_by(|&a, &b| {
        let by_size = rss[b].spec.cmp(&rss[a].spec);
        let by_age = if to_add > 0 { rss[b].created.cmp(&rss[a].created) } else { rss[a].created.cmp(&rss[b].created) };
        by_size.then(by_age)
    });
    let mut added = 0;
    for &i in &order {
        let rs = rss[i];
        if rs.spec == 0 || to_add == added {
            continue;
        }
        let fraction = if desired == 0 {
            -rs.spec
        } else {
            match rs.max_replicas.unwrap_or(status_replicas) {
                annotated if annotated > 0 => {
                    round(f64::from(rs.spec) * f64::from(desired + max_surge) / f64::from(annotated)) - rs.spec
                }
                _ => to_add - added,
            }
        };
        let left = to_add - added;
        let share = if to_add > 0 { fraction.min(left) } else { fraction.max(left) };
        sizes[i] += share;
        added += share;
    }
    let first = order[0];
    sizes[first] = (sizes[first] + to_add - added).max(0);
    sizes
}

impl Rollout<'_> {
    /// Resizes the Deployment's ReplicaSets to a changed `replicas` (`scale`) without moving
    /// the rollout forward.
    pub async fn scale_replica_sets(&mut self, new: Option<usize>) -> Result<(), ReconcileError> {
        let desired = strategy::desired(&self.d);
        let all: Vec<usize> = new.into_iter().chain(self.olds(new)).collect();
        let active: Vec<usize> = all.iter().copied().filter(|&i| self.spec_of(i) > 0).collect();
        if active.len() <= 1 {
            // One (or no) active ReplicaSet: it (or the newest) simply takes the new size.
            let newest_old = self.olds(new).into_iter().max_by_key(|&i| self.created(i));
            let Some(target) = active.first().copied().or(new).or(newest_old) else { return Ok(()) };
            self.scale(target, desired).await?;
            return Ok(());
        }
        if let Some(n) = new
            && self.is_saturated(n)
        {
            for i in self.olds(new) {
                self.scale(i, 0).await?;
            }
            return Ok(());
        }
        if !strategy::is_rolling(&self.d) {
            return Ok(());
        }
        let sized: Vec<Sized> = active
            .iter()
            .map(|&i| Sized {
                spec: self.spec_of(i),
                max_replicas: history::max_replicas(&self.rss[i]),
                created: self.created(i),
            })
            .collect();
        let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let sizes = proportional(desired, strategy::max_surge(&self.d), status_replicas, &sized);
        for (i, size) in active.into_iter().zip(sizes) {
            self.resize(i, size).await?;
        }
        Ok(())
    }

    /// The new ReplicaSet holds every replica, all available, for the current size.
    fn is_saturated(&self, new: usize) -> bool {
        let desired = strategy::desired(&self.d);
        let rs = &self.rss[new];
        self.spec_of(new) == desired
            && history::desired_replicas(rs) == Some(desired)
            && rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) == desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<Timestamp> {
        Some(s.parse().expect("timestamp"))
    }

    #[test]
    fn growth_is_shared_in_proportion_with_the_leftover_to_the_largest() {
        // A 10-replica Deployment (surge 3) mid-rollout: old 8, new 5 = 13. Scaled to 20 (+surge 5 = 25).
        let rss = [
            Sized { spec: 8, max_replicas: Some(13), created: at("2026-01-01T00:00:00Z") },
            Sized { spec: 5, max_replicas: Some(13), created: at("2026-01-02T00:00:00Z") },
        ];
        let sizes = proportional(20, 5, 13, &rss);
        assert_eq!(sizes.iter().sum::<i32>(), 25);
        assert_eq!(sizes, vec![15, 10], "8*25/13 = 15.4 -> 15, 5*25/13 = 9.6 -> 10");
    }

    #[test]
    fn shrinking_takes_from_each_and_zero_empties_all() {
        let rss = [
            Sized { spec: 6, max_replicas: Some(12), created: at("2026-01-01T00:00:00Z") },
            Sized { spec: 6, max_replicas: Some(12), created: at("2026-01-02T00:00:00Z") },
        ];
        assert_eq!(proportional(5, 1, 12, &rss), vec![3, 3]);
        assert_eq!(proportional(0, 1, 12, &rss), vec![0, 0]);
        assert_eq!(proportional(10, 2, 12, &rss), vec![6, 6], "nothing to add");
    }

    #[test]
    fn a_missing_annotation_uses_the_status_replicas() {
        let rss = [
            Sized { spec: 2, max_replicas: None, created: at("2026-01-01T00:00:00Z") },
            Sized { spec: 2, max_replicas: None, created: at("2026-01-02T00:00:00Z") },
        ];
        // 4 -> 8: each doubles.
        assert_eq!(proportional(8, 0, 4, &rss), vec![4, 4]);
    }
}
