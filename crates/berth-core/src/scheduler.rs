//! Placement: which nodes get new instances of an app.
//!
//! One pass filters nodes (driver, free resources, constraints), scores the survivors
//! (spread or bin-packing) and subtracts what it placed before placing the next instance,
//! so one pass never over-commits a node. When an instance cannot be placed, the outcome
//! says why in words an operator can act on.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use crate::constraint::Constraint;
use crate::id::{AppId, NodeId};
use crate::resources::Resources;
use crate::spec::Placement;

/// What the scheduler knows about one node.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: NodeId,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub drivers: Vec<String>,
    pub total: Resources,
    /// Held by instances on the node (running, starting, ordered, stopping).
    pub used: Resources,
    /// Active instances per app on this node.
    pub app_counts: HashMap<AppId, u32>,
}

impl NodeView {
    pub fn free(&self) -> Resources {
        self.total.saturating_sub(&self.used)
    }

    fn count_of(&self, app: &AppId) -> u32 {
        self.app_counts.get(app).copied().unwrap_or(0)
    }
}

/// What to place.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub app: &'a AppId,
    pub resources: Resources,
    pub driver: &'a str,
    pub constraints: &'a [Constraint],
    pub placement: Placement,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One node per placed instance, in placement order.
    pub placed: Vec<NodeId>,
    /// How many could not be placed.
    pub unplaced: u32,
    /// Why the first unplaced instance did not fit.
    pub why: Option<String>,
}

/// Places up to `req.count` instances, updating `nodes` (used resources and app counts)
/// as it goes.
///
/// Each node is scored once and kept in a heap; only the node that just received an
/// instance is re-scored. That is exact because a node's score depends only on the node
/// itself, and a node that became infeasible never becomes feasible again within a pass
/// (placing only consumes resources and fills constraint slots). Cost:
/// O((nodes + count) log nodes) instead of O(nodes x count).
pub fn place(nodes: &mut [NodeView], req: &Request<'_>) -> Outcome {
    let mut per_value = ValueCounts::new(nodes, req);
    let mut heap: BinaryHeap<Reverse<((u64, u64), usize)>> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| check(n, req, &per_value).is_ok())
        .map(|(i, n)| Reverse((score(n, &n.free(), req), i)))
        .collect();
    let mut placed = Vec::new();
    while placed.len() < req.count as usize {
        let Some(Reverse((_, idx))) = heap.pop() else {
            break;
        };
        if check(&nodes[idx], req, &per_value).is_err() {
            continue;
        }
        let node = &mut nodes[idx];
        node.used = node.used + req.resources;
        *node.app_counts.entry(req.app.clone()).or_insert(0) += 1;
        per_value.add(node, req);
        placed.push(node.id.clone());
        if check(node, req, &per_value).is_ok() {
            heap.push(Reverse((score(node, &node.free(), req), idx)));
        }
    }
    let unplaced = req.count - placed.len() as u32;
    let why = (unplaced > 0).then(|| {
        let mut why = Why::default();
        for node in nodes.iter() {
            match check(node, req, &per_value) {
                Ok(()) => {}
                Err(Reject::Driver) => why.driver += 1,
                Err(Reject::Resources) => why.note_resources(node, &node.free(), &req.resources),
                Err(Reject::Constraint(ci)) => *why.constraint.entry(ci).or_insert(0) += 1,
            }
        }
        why.explain(nodes.len(), req)
    });
    Outcome {
        placed,
        unplaced,
        why,
    }
}

enum Reject {
    Driver,
    Resources,
    Constraint(usize),
}

/// Instances of the app per constraint field value, across all nodes.
struct ValueCounts(Vec<HashMap<String, u32>>);

impl ValueCounts {
    fn new(nodes: &[NodeView], req: &Request<'_>) -> Self {
        ValueCounts(
            req.constraints
                .iter()
                .map(|c| {
                    let mut m = HashMap::new();
                    for n in nodes {
                        let k = n.count_of(req.app);
                        if k > 0
                            && let Some(v) = c.field.value_of(&n.hostname, &n.labels)
                        {
                            *m.entry(v.to_string()).or_insert(0) += k;
                        }
                    }
                    m
                })
                .collect(),
        )
    }

    fn add(&mut self, node: &NodeView, req: &Request<'_>) {
        for (ci, c) in req.constraints.iter().enumerate() {
            if let Some(v) = c.field.value_of(&node.hostname, &node.labels) {
                *self.0[ci].entry(v.to_string()).or_insert(0) += 1;
            }
        }
    }
}

fn check(node: &NodeView, req: &Request<'_>, per_value: &ValueCounts) -> Result<(), Reject> {
    if !node.drivers.iter().any(|d| d == req.driver) {
        return Err(Reject::Driver);
    }
    if !node.free().fits(&req.resources) {
        return Err(Reject::Resources);
    }
    for (ci, c) in req.constraints.iter().enumerate() {
        let counts = &per_value.0[ci];
        let value = c.field.value_of(&node.hostname, &node.labels);
        let cluster_value = counts
            .iter()
            .find(|(_, k)| **k > 0)
            .map(|(v, _)| v.as_str());
        if !c.allows(
            value,
            |v| counts.get(v).copied().unwrap_or(0),
            cluster_value,
        ) {
            return Err(Reject::Constraint(ci));
        }
    }
    Ok(())
}

/// Lower is better. Spread: fewest instances of this app, then most free (per mille of
/// the node, memory and CPU). Binpack: least free after placing.
fn score(node: &NodeView, free: &Resources, req: &Request<'_>) -> (u64, u64) {
    let per_mille =
        |free: u64, total: u64| free.saturating_mul(1000).checked_div(total).unwrap_or(0);
    let after = free.saturating_sub(&req.resources);
    let free_share = per_mille(after.mem_mib, node.total.mem_mib)
        + per_mille(after.cpu_millis, node.total.cpu_millis);
    match req.placement {
        Placement::Spread => (u64::from(node.count_of(req.app)), 2000 - free_share),
        Placement::Binpack => (free_share, 0),
    }
}

/// Tally of why nodes were rejected for one instance.
#[derive(Default)]
struct Why {
    driver: usize,
    cpu: usize,
    mem: usize,
    disk: usize,
    constraint: BTreeMap<usize, usize>,
    largest_cpu: Option<(u64, String)>,
    largest_mem: Option<(u64, String)>,
    largest_disk: Option<(u64, String)>,
}

impl Why {
    fn note_resources(&mut self, node: &NodeView, free: &Resources, need: &Resources) {
        let keep_max = |slot: &mut Option<(u64, String)>, v: u64| {
            if slot.as_ref().is_none_or(|(m, _)| v > *m) {
                *slot = Some((v, node.id.to_string()));
            }
        };
        if free.mem_mib < need.mem_mib {
            self.mem += 1;
        }
        if free.cpu_millis < need.cpu_millis {
            self.cpu += 1;
        }
        if free.disk_mib < need.disk_mib {
            self.disk += 1;
        }
        keep_max(&mut self.largest_mem, free.mem_mib);
        keep_max(&mut self.largest_cpu, free.cpu_millis);
        keep_max(&mut self.largest_disk, free.disk_mib);
    }

    fn explain(&self, node_count: usize, req: &Request<'_>) -> String {
        if node_count == 0 {
            return "no nodes are connected; start an agent (berth agent --server ...)".into();
        }
        let mut parts = Vec::new();
        if self.driver > 0 {
            parts.push(format!(
                "{} node(s) lack the {:?} driver",
                self.driver, req.driver
            ));
        }
        if self.mem > 0 {
            let (largest, on) = self.largest_mem.clone().unwrap_or_default();
            parts.push(format!(
                "no node has {} MiB memory free; largest free is {largest} MiB on {on}",
                req.resources.mem_mib
            ));
        }
        if self.cpu > 0 {
            let (largest, on) = self.largest_cpu.clone().unwrap_or_default();
            parts.push(format!(
                "no node has {} cpus free; largest free is {} on {on}",
                req.resources.cpus(),
                largest as f64 / 1000.0
            ));
        }
        if self.disk > 0 {
            let (largest, on) = self.largest_disk.clone().unwrap_or_default();
            parts.push(format!(
                "no node has {} MiB disk free; largest free is {largest} MiB on {on}",
                req.resources.disk_mib
            ));
        }
        for (ci, n) in &self.constraint {
            parts.push(format!(
                "{n} node(s) excluded by constraint [{}]",
                req.constraints[*ci]
            ));
        }
        format!("{} node(s) checked: {}", node_count, parts.join("; "))
    }
}

#[cfg(test)]
mod tests;
