//! The `RollingUpdate` strategy (Kubernetes' `rolling.go`): scale the new ReplicaSet up
//! within `maxSurge`, then the old ones down — unhealthy pods first, healthy ones only while
//! at least `replicas - maxUnavailable` pods stay available. Each pass makes one move and
//! waits for the ReplicaSets to report back (their status changes requeue the Deployment).
//!
//! The arithmetic is in plain functions ([`new_rs_replicas`], [`old_rs_targets`]); the
//! methods on [`Rollout`] apply it.

use super::strategy;
use super::sync::Rollout;
use crate::controllers::ReconcileError;

/// A ReplicaSet as the arithmetic sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// `spec.replicas`.
    pub spec: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// The size of the new ReplicaSet on the way up (`NewRSNewReplicas`): as far as the surge
/// allows, never beyond `desired`. `total` is the sum of every ReplicaSet's `spec.replicas`.
pub fn new_rs_replicas(desired: i32, max_surge: i32, total: i32, new_spec: i32) -> i32 {
    let max_total = desired + max_surge;
    if total >= max_total {
        return new_spec;
    }
    let up = (max_total - total).min(desired - new_spec).max(0);
    new_spec + up
}

/// The new `spec.replicas` of each old ReplicaSet (`old`, oldest first), given the new one
/// (`reconcileOldReplicaSets`): first the unavailable pods of old ReplicaSets go, as far as
/// the pods that could be unavailable allow; then available ones, while more than
/// `desired - max_unavailable` stay available.
pub fn old_rs_targets(desired: i32, max_unavailable: i32, new: Counts, old: &[Counts]) -> Vec<i32> {
    let mut targets: Vec<i32> = old.iter().map(|c| c.spec).collect();
    let old_total: i32 = targets.iter().sum();
    if old_total == 0 {
        return targets;
    }
    let min_available = desired - max_unavailable;
    let new_unavailable = (new.spec - new.available).max(0);
    let max_scaled_down = old_total + new.spec - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return targets;
    }
    // Unhealthy replicas first: removing them never lowers availability.
    let mut cleaned = 0;
    for (t, c) in targets.iter_mut().zip(old) {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = *t - c.available.min(*t);
        if *t == 0 || unhealthy <= 0 {
            continue;
        }
        let n = (max_scaled_down - cleaned).min(unhealthy);
        *t -= n;
        cleaned += n;
    }
    // Then available ones, within maxUnavailable. An old ReplicaSet never counts more
    // available pods than it will keep (its status may still report the ones just removed).
    let available: i32 = new.available + targets.iter().zip(old).map(|(t, c)| c.available.min(*t)).sum::<i32>();
    if available <= min_available {
        return targets;
    }
    let budget = available - min_available;
    let mut scaled = 0;
    for t in targets.iter_mut() {
        if scaled >= budget {
            break;
        }
        if *t == 0 {
            continue;
        }
        let n = (*t).min(budget - scaled);
        *t -= n;
        scaled += n;
    }
    targets
}

impl Rollout<'_> {
    /// One pass of a rolling update (`rolloutRolling`).
    pub async fn rolling(&mut self) -> Result<(), ReconcileError> {
        let Some(new) = self.sync_revision(true).await? else { return Ok(()) };
        if self.reconcile_new(new).await? || self.reconcile_old(new).await? {
            return self.finish_rollout();
        }
        if self.was_complete() {
            self.cleanup().await?;
        }
        self.finish_rollout()
    }

    /// Moves the new ReplicaSet towards `replicas` (`reconcileNewReplicaSet`): down at once
    /// when too big, up within the surge (or straight to `replicas` for `Recreate`).
    pub async fn reconcile_new(&mut self, new: usize) -> Result<bool, ReconcileError> {
        let desired = strategy::desired(&self.d);
        let spec = self.spec_of(new);
        if spec == desired {
            return Ok(false);
        }
        if spec > desired || !strategy::is_rolling(&self.d) {
            return self.scale(new, desired).await;
        }
        let total: i32 = (0..self.rss.len()).map(|i| self.spec_of(i)).sum();
        let target = new_rs_replicas(desired, strategy::max_surge(&self.d), total, spec);
        self.scale(new, target).await
    }

    /// Scales old ReplicaSets down as far as availability allows; true if any moved.
    async fn reconcile_old(&mut self, new: usize) -> Result<bool, ReconcileError> {
        let old: Vec<usize> = self.olds(Some(new)).into_iter().filter(|&i| self.spec_of(i) > 0).collect();
        let counts: Vec<Counts> = old.iter().map(|&i| self.counts(i)).collect();
        let targets =
            old_rs_targets(strategy::desired(&self.d), strategy::max_unavailable(&self.d), self.counts(new), &counts);
        let mut moved = false;
        for (i, target) in old.into_iter().zip(targets) {
            moved |= self.scale(i, target).await?;
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(spec: i32, available: i32) -> Counts {
        Counts { spec, available }
    }

    #[test]
    fn new_replica_set_grows_within_the_surge() {
        assert_eq!(new_rs_replicas(3, 1, 3, 0), 1, "3 old + 1 surge");
        assert_eq!(new_rs_replicas(3, 1, 4, 1), 1, "at the ceiling: wait");
        assert_eq!(new_rs_replicas(3, 1, 3, 1), 2, "an old one went: one more");
        assert_eq!(new_rs_replicas(10, 3, 10, 0), 3);
        assert_eq!(new_rs_replicas(3, 5, 3, 0), 3, "never beyond replicas");
        assert_eq!(new_rs_replicas(3, 0, 2, 0), 1, "no surge: only into the room an old one left");
    }

    #[test]
    fn old_replica_sets_wait_for_the_new_ones_to_be_available() {
        // maxUnavailable 0, maxSurge 1: 3 old + 1 new not yet available.
        assert_eq!(old_rs_targets(3, 0, c(1, 0), &[c(3, 3)]), vec![3]);
        // The new pod became available: one old may go.
        assert_eq!(old_rs_targets(3, 0, c(1, 1), &[c(3, 3)]), vec![2]);
        // maxUnavailable 1: one old goes at once, before anything new is available.
        assert_eq!(old_rs_targets(3, 1, c(1, 0), &[c(3, 3)]), vec![2]);
    }

    #[test]
    fn unhealthy_old_replicas_go_first_and_oldest_first() {
        // Two old ReplicaSets: the older has 2 unavailable pods; nothing new is available.
        assert_eq!(old_rs_targets(4, 1, c(1, 0), &[c(2, 0), c(3, 3)]), vec![0, 3], "broken pods go, free");
        // Healthy scale-down takes the oldest first.
        assert_eq!(old_rs_targets(4, 0, c(2, 2), &[c(1, 1), c(3, 3)]), vec![0, 2]);
        // A stale status that still counts removed pods does not buy extra scale-down.
        assert_eq!(old_rs_targets(3, 0, c(2, 2), &[c(2, 3)]), vec![1]);
        assert_eq!(old_rs_targets(3, 0, c(0, 0), &[]), Vec::<i32>::new());
    }
}
