//! The scheduler: Pending pods placed oldest first on the Ready, schedulable node with the most
//! room that fits them (LeastAllocated), against the requests kept per node.

use super::*;

impl World {
    /// Requests in use on each node (pods that hold resources: bound and not finished;
    /// terminating pods still hold theirs, as on a real node).
    pub fn used(&self) -> HashMap<&str, (u64, u64, u32)> {
        self.nodes
            .keys()
            .map(|n| (n.as_str(), self.usage.get(n).copied().unwrap_or_default()))
            .collect()
    }

    /// Places pending pods, oldest first, on the schedulable node with the most free CPU that
    /// fits them (the default scheduler's LeastAllocated scoring, ties by name).
    pub(super) fn schedule(&mut self) {
        let mut pending: Vec<(Millis, (String, String))> = self
            .pods
            .values()
            .filter(|p| p.node.is_none() && p.deleting_at.is_none() && p.phase == PodPhase::Pending)
            .map(|p| (p.created, p.key()))
            .collect();
        if pending.is_empty() {
            return;
        }
        pending.sort();
        // (node, free cpu, free memory, free pod slots), from the kept usage.
        let mut room: Vec<(&SimNode, u64, u64, u32)> = self
            .nodes
            .values()
            .filter(|n| n.ready && !n.down)
            .map(|n| {
                let (c, m, k) = self.usage.get(&n.name).copied().unwrap_or_default();
                (
                    n,
                    n.cpu_millis.saturating_sub(c),
                    n.memory_bytes.saturating_sub(m),
                    n.max_pods.saturating_sub(k),
                )
            })
            .collect();
        let mut placements = vec![];
        for (_, key) in pending {
            let Some(pod) = self.pods.get(&key) else {
                continue;
            };
            let spec = &pod.spec;
            let mut best: Option<(u64, usize)> = None;
            for (i, (n, cpu, mem, slots)) in room.iter().enumerate() {
                if spec.cpu_millis > *cpu || spec.memory_bytes > *mem || *slots == 0 {
                    continue;
                }
                if !spec
                    .node_selector
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
                    || !n.tolerated_by(&spec.tolerations, false)
                {
                    continue;
                }
                let score = (cpu - spec.cpu_millis) * 1000 / n.cpu_millis.max(1);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, i));
                }
            }
            if let Some((_, i)) = best {
                let r = &mut room[i];
                r.1 -= spec.cpu_millis;
                r.2 -= spec.memory_bytes;
                r.3 -= 1;
                placements.push((key, r.0.name.clone()));
            }
        }
        for (key, node) in placements {
            if let Some(mut pod) = self.pods.remove(&key) {
                self.bind(&mut pod, &node);
                self.pods.insert(key, pod);
            }
        }
    }
}
