//! Placement throughput of the real reconciler and scheduler over a simulated cluster.
//! Usage: bench_scheduler NODES APPS INSTANCES_PER_APP [NODE_MEM_MIB]
//! Prints one line of `key=value` pairs.

use berth_server::sim::{SimSpec, run};

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("numbers: NODES APPS INSTANCES_PER_APP [NODE_MEM_MIB]")
        })
        .collect();
    let [nodes, apps, per_app, rest @ ..] = args.as_slice() else {
        eprintln!("usage: bench_scheduler NODES APPS INSTANCES_PER_APP [NODE_MEM_MIB]");
        std::process::exit(2);
    };
    let spec = SimSpec {
        nodes: *nodes as usize,
        apps: *apps as usize,
        instances_per_app: *per_app as u32,
        node_cpus: 64.0,
        node_mem_mib: rest.first().copied().unwrap_or(256 * 1024),
        app_cpus: 0.01,
        app_mem_mib: 16,
        constraints: vec![vec!["hostname".into(), "MAX_PER".into(), "50".into()]],
    };
    let r = run(&spec);
    println!(
        "nodes={} apps={} wanted={} placed={} passes={} seconds={:.3} placements_per_second={:.0} peak_rss_mib={}",
        spec.nodes,
        spec.apps,
        r.wanted,
        r.placed,
        r.passes,
        r.elapsed.as_secs_f64(),
        r.per_second(),
        peak_rss_mib()
    );
    if let Some(why) = r.why {
        println!("unplaced: {why}");
    }
}
