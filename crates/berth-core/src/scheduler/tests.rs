use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

fn node(id: &str, cpus: f64, mem: u64) -> NodeView {
    NodeView {
        id: NodeId::new(id),
        hostname: id.to_string(),
        labels: BTreeMap::new(),
        drivers: vec!["process".into()],
        total: Resources::new(cpus, mem, 1000),
        used: Resources::default(),
        app_counts: HashMap::new(),
    }
}

fn constraints(raw: &[&[&str]]) -> Vec<Constraint> {
    raw.iter()
        .map(|p| Constraint::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap())
        .collect()
}

fn req<'a>(app: &'a AppId, mem: u64, count: u32, cs: &'a [Constraint]) -> Request<'a> {
    Request {
        app,
        resources: Resources::new(0.1, mem, 0),
        driver: "process",
        constraints: cs,
        placement: Placement::Spread,
        count,
    }
}

#[test]
fn spreads_across_nodes() {
    let app = AppId::parse("a").unwrap();
    let mut nodes = vec![
        node("n1", 4.0, 1024),
        node("n2", 4.0, 1024),
        node("n3", 4.0, 1024),
    ];
    let out = place(&mut nodes, &req(&app, 100, 3, &[]));
    let mut placed: Vec<_> = out.placed.iter().map(|n| n.to_string()).collect();
    placed.sort();
    assert_eq!(placed, ["n1", "n2", "n3"]);
    assert_eq!(out.unplaced, 0);
}

#[test]
fn binpack_fills_one_node() {
    let app = AppId::parse("a").unwrap();
    let mut nodes = vec![node("n1", 4.0, 1024), node("n2", 4.0, 1024)];
    nodes[1].used = Resources::new(0.0, 100, 0);
    let mut r = req(&app, 100, 3, &[]);
    r.placement = Placement::Binpack;
    let out = place(&mut nodes, &r);
    assert!(out.placed.iter().all(|n| n.as_str() == "n2"), "{out:?}");
}

#[test]
fn explains_memory_shortage() {
    let app = AppId::parse("a").unwrap();
    let mut nodes = vec![node("n1", 4.0, 200), node("n2", 4.0, 300)];
    let out = place(&mut nodes, &req(&app, 512, 1, &[]));
    assert_eq!(out.unplaced, 1);
    let why = out.why.unwrap();
    assert!(
        why.contains("no node has 512 MiB memory free; largest free is 300 MiB on n2"),
        "{why}"
    );
}

#[test]
fn explains_no_nodes_and_drivers() {
    let app = AppId::parse("a").unwrap();
    let out = place(&mut [], &req(&app, 1, 1, &[]));
    assert!(out.why.unwrap().contains("start an agent"));
    let mut nodes = vec![node("n1", 1.0, 100)];
    let mut r = req(&app, 1, 1, &[]);
    r.driver = "docker";
    assert!(
        place(&mut nodes, &r)
            .why
            .unwrap()
            .contains("lack the \"docker\" driver")
    );
}

#[test]
fn unique_hostname_limits_to_one_per_node() {
    let app = AppId::parse("a").unwrap();
    let cs = constraints(&[&["hostname", "UNIQUE"]]);
    let mut nodes = vec![node("n1", 4.0, 1024), node("n2", 4.0, 1024)];
    let out = place(&mut nodes, &req(&app, 10, 3, &cs));
    assert_eq!(out.placed.len(), 2);
    assert_eq!(out.unplaced, 1);
    assert!(out.why.unwrap().contains("constraint [hostname UNIQUE]"));
}

#[test]
fn cluster_like_and_max_per_on_labels() {
    let app = AppId::parse("a").unwrap();
    let mut nodes = vec![
        node("n1", 4.0, 1024),
        node("n2", 4.0, 1024),
        node("n3", 4.0, 1024),
    ];
    nodes[0].labels.insert("rack".into(), "r1".into());
    nodes[1].labels.insert("rack".into(), "r1".into());
    nodes[2].labels.insert("rack".into(), "r2".into());
    let cs = constraints(&[&["rack", "CLUSTER", "r1"]]);
    let out = place(&mut nodes.clone(), &req(&app, 10, 4, &cs));
    assert!(out.placed.iter().all(|n| n.as_str() != "n3"));
    let cs = constraints(&[&["rack", "MAX_PER", "1"]]);
    let out = place(&mut nodes.clone(), &req(&app, 10, 3, &cs));
    assert_eq!(out.placed.len(), 2);
    let cs = constraints(&[&["rack", "UNLIKE", "r1"]]);
    let out = place(&mut nodes.clone(), &req(&app, 10, 2, &cs));
    assert!(out.placed.iter().all(|n| n.as_str() == "n3"));
    let cs = constraints(&[&["rack", "CLUSTER"]]);
    let out = place(&mut nodes, &req(&app, 10, 3, &cs));
    let racks: std::collections::HashSet<_> = out
        .placed
        .iter()
        .map(|n| if n.as_str() == "n3" { "r2" } else { "r1" })
        .collect();
    assert_eq!(racks.len(), 1, "{out:?}");
}

#[test]
fn respects_existing_instances() {
    let app = AppId::parse("a").unwrap();
    let cs = constraints(&[&["hostname", "UNIQUE"]]);
    let mut nodes = vec![node("n1", 4.0, 1024), node("n2", 4.0, 1024)];
    nodes[0].app_counts.insert(app.clone(), 1);
    let out = place(&mut nodes, &req(&app, 10, 2, &cs));
    assert_eq!(out.placed, vec![NodeId::new("n2")]);
}

proptest! {
    #[test]
    fn never_over_commits(
        totals in prop::collection::vec((1u64..8000, 1u64..4096, 0u64..4096), 0..12),
        used in prop::collection::vec((0u64..8000, 0u64..4096), 12),
        asks in prop::collection::vec((1u64..2000, 1u64..1024, 0u64..512, 0u32..20, any::<bool>(), 0u8..3), 1..6),
    ) {
        let mut nodes: Vec<NodeView> = totals.iter().enumerate().map(|(i, (c, m, d))| {
            let mut n = node(&format!("n{i}"), 0.0, 0);
            n.total = Resources { cpu_millis: *c, mem_mib: *m, disk_mib: *d };
            n.used = Resources { cpu_millis: used[i].0.min(*c), mem_mib: used[i].1.min(*m), disk_mib: 0 };
            n.labels.insert("rack".into(), format!("r{}", i % 3));
            n
        }).collect();
        let initial: Vec<Resources> = nodes.iter().map(|n| n.used).collect();
        let mut placed_res: HashMap<String, Resources> = HashMap::new();
        for (k, (c, m, d, count, binpack, cons)) in asks.iter().enumerate() {
            let app = AppId::parse(&format!("app{k}")).unwrap();
            let cs = match cons {
                0 => vec![],
                1 => constraints(&[&["hostname", "UNIQUE"]]),
                _ => constraints(&[&["rack", "MAX_PER", "2"]]),
            };
            let r = Request {
                app: &app,
                resources: Resources { cpu_millis: *c, mem_mib: *m, disk_mib: *d },
                driver: "process",
                constraints: &cs,
                placement: if *binpack { Placement::Binpack } else { Placement::Spread },
                count: *count,
            };
            let out = place(&mut nodes, &r);
            prop_assert_eq!(out.placed.len() as u32 + out.unplaced, *count);
            prop_assert_eq!(out.why.is_some(), out.unplaced > 0);
            let mut per_node: HashMap<&str, u32> = HashMap::new();
            let mut per_rack: HashMap<String, u32> = HashMap::new();
            for n in &out.placed {
                *per_node.entry(n.as_str()).or_default() += 1;
                let idx: usize = n.as_str()[1..].parse().unwrap();
                *per_rack.entry(format!("r{}", idx % 3)).or_default() += 1;
                let e = placed_res.entry(n.to_string()).or_default();
                *e = *e + r.resources;
            }
            if *cons == 1 { prop_assert!(per_node.values().all(|v| *v <= 1)); }
            if *cons == 2 { prop_assert!(per_rack.values().all(|v| *v <= 2)); }
        }
        for (i, n) in nodes.iter().enumerate() {
            let added = placed_res.get(n.id.as_str()).copied().unwrap_or_default();
            let sum = initial[i] + added;
            prop_assert!(n.total.fits(&sum), "node {} over-committed: {:?} > {:?}", n.id, sum, n.total);
            prop_assert_eq!(n.used, sum);
        }
    }
}
