//! Completion indexes of Indexed Jobs: the compressed interval form Kubernetes stores in
//! `status.completedIndexes` ("0-2,4"), reading a pod's index, and which indexes still need
//! a pod.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use skiff_api::labels::JOB_COMPLETION_INDEX;

/// A set of completion indexes.
pub type Indexes = BTreeSet<i32>;

/// Parses "0-2,4" (invalid or out-of-range parts are ignored, as Kubernetes does).
pub fn parse(text: &str, completions: i32) -> Indexes {
    let mut set = Indexes::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(lo), Ok(hi)) = (lo, hi) {
            set.extend((lo.max(0)..=hi.min(completions - 1)).filter(|i| *i >= 0));
        }
    }
    set
}

/// Formats a set as sorted intervals: {0,1,2,4} → "0-2,4".
pub fn format(set: &Indexes) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    out.join(",")
}

/// The completion index of a pod (annotation, else label), when valid for `completions`.
pub fn of_pod(pod: &Pod, completions: i32) -> Option<i32> {
    let meta = &pod.metadata;
    let text = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(JOB_COMPLETION_INDEX))
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(JOB_COMPLETION_INDEX)))?;
    text.parse::<i32>().ok().filter(|i| (0..completions).contains(i))
}

/// Up to `n` of the lowest indexes in `[0, completions)` that are neither done nor taken.
pub fn first_pending(completions: i32, done: &Indexes, taken: &Indexes, n: usize) -> Vec<i32> {
    (0..completions).filter(|i| !done.contains(i) && !taken.contains(i)).take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_trip() {
        let set: Indexes = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format(&set), "0-2,4,6-7");
        assert_eq!(parse("0-2,4,6-7", 10), set);
        assert_eq!(format(&Indexes::new()), "");
        assert_eq!(parse("", 3), Indexes::new());
        assert_eq!(parse("1-9,x,12", 3), [1, 2].into_iter().collect(), "clipped to completions");
    }

    #[test]
    fn pending_indexes_skip_done_and_running_ones() {
        let done: Indexes = [0, 2].into_iter().collect();
        let taken: Indexes = [1].into_iter().collect();
        assert_eq!(first_pending(6, &done, &taken, 2), vec![3, 4]);
        assert_eq!(first_pending(3, &done, &taken, 5), Vec::<i32>::new());
    }

    #[test]
    fn a_pods_index_comes_from_its_annotation() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "annotations": {JOB_COMPLETION_INDEX: "2"}}
        }))
        .expect("pod");
        assert_eq!(of_pod(&pod, 3), Some(2));
        assert_eq!(of_pod(&pod, 2), None, "out of range");
    }
}
