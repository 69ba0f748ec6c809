//! Randomized faults on a three-member registry cluster: kills, restarts (with or
//! without their data), partitions, while clients register and beat throughout. After
//! every heal all members must list exactly the instances whose clients still beat.
//!
//! The seed is printed; set BERTH_CLUSTER_SEED to replay a failure.

mod common;

use std::time::Duration;

use common::registry_cluster::{Beater, Cluster, expected};

const ROUNDS: usize = 7;

/// xorshift64*: small, deterministic, enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("BERTH_CLUSTER_SEED") {
        Ok(s) => s.trim().parse().expect("BERTH_CLUSTER_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
                | 1
        }
    }
}

#[tokio::test]
async fn random_kills_restarts_and_partitions_lose_no_live_instance() {
    let seed = seed();
    println!("BERTH_CLUSTER_SEED={seed}");
    eprintln!("BERTH_CLUSTER_SEED={seed}");
    let mut rng = Rng(seed);
    let mut c = Cluster::start(3).await;
    let mut beaters: Vec<Beater> = Vec::new();
    let mut next_port = 6000u16;
    for _ in 0..6 {
        let via = c.nodes[rng.below(3) as usize].http;
        let svc = format!("rnd-{}", rng.below(4));
        beaters.push(Beater::start(&c.http, via, &svc, "10.9.0.1", next_port).await);
        next_port += 1;
    }
    c.wait_converged("start", &expected(&beaters), Duration::from_secs(10))
        .await;

    for round in 0..ROUNDS {
        let victim = rng.below(3) as usize;
        let fault = rng.below(3);
        let others: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
        match fault {
            0 | 1 => {
                // Kill; clients of the dead member fail over to another member.
                let wipe = fault == 1;
                println!(
                    "round {round}: kill node{victim}, restart it {}",
                    if wipe { "empty" } else { "with its data" }
                );
                c.kill(victim).await;
                for b in &beaters {
                    if *b.via.lock().unwrap() == c.nodes[victim].http {
                        b.switch(c.nodes[others[rng.below(2) as usize]].http);
                    }
                }
                if rng.below(2) == 0 {
                    let via = c.nodes[others[0]].http;
                    beaters.push(
                        Beater::start(
                            &c.http,
                            via,
                            &format!("rnd-{}", rng.below(4)),
                            "10.9.0.2",
                            next_port,
                        )
                        .await,
                    );
                    next_port += 1;
                }
                tokio::time::sleep(Duration::from_millis(500 + rng.below(1500))).await;
                c.restart(victim, wipe).await;
            }
            _ => {
                let hold = 800 + rng.below(1700);
                println!("round {round}: partition node{victim} for {hold} ms");
                c.isolate(victim);
                // A client registers on the cut-off side too.
                if rng.below(2) == 0 {
                    let via = c.nodes[victim].http;
                    beaters.push(
                        Beater::start(
                            &c.http,
                            via,
                            &format!("rnd-{}", rng.below(4)),
                            "10.9.0.3",
                            next_port,
                        )
                        .await,
                    );
                    next_port += 1;
                }
                tokio::time::sleep(Duration::from_millis(hold)).await;
                c.heal_all();
            }
        }
        // Now and then a client goes away: its instance must expire everywhere.
        if beaters.len() > 4 && rng.below(3) == 0 {
            let b = beaters.remove(rng.below(beaters.len() as u64) as usize);
            println!("round {round}: client {} of {} stops", b.addr(), b.service);
            b.stop().await;
        }
        c.wait_all_loaded(3).await;
        c.wait_converged(
            &format!("round {round} (seed {seed})"),
            &expected(&beaters),
            Duration::from_secs(15),
        )
        .await;
    }
    for b in beaters {
        b.stop().await;
    }
}
