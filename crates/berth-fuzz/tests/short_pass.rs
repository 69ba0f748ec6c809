//! The test suite's short pass over every fuzz target: each committed seed
//! (`fuzz/corpus/TARGET`), each input that ever crashed a target (`fuzz/regressions/TARGET`),
//! then a fixed number of mutations of them from a fixed seed, so every run tries the same
//! inputs and a failure replays. libFuzzer's coverage-guided runs (`scripts/fuzz`) go much
//! further; this pass keeps every target and its properties exercised on every change
//! without the instrumented build, which alone would cost a cold CI run a quarter hour.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mutations per target. Enough to leave the seeds' happy paths (truncations, bit flips,
/// spliced fields), few enough that all targets take seconds in a debug build.
const MUTATIONS: usize = 3_000;
/// Mutated inputs stay small: a parser's limits are not what this pass is after.
const MAX_LEN: usize = 4_096;

/// Bytes the parsers give meaning to, spliced into inputs.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\"",
    b"=",
    b"&",
    b"%",
    b"%00",
    b"#",
    b",",
    b":",
    b"{",
    b"}",
    b"[",
    b"]",
    b"[[rules]]",
    b"\"*\"",
    b"0",
    b"-1",
    b"18446744073709551616",
    b"1e309",
    b"NaN",
    b"null",
    b"true",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Connection: ",
    b"Host: ",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for dir in ["fuzz/corpus", "fuzz/regressions"] {
        let dir = repo_root().join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("a committed fuzz input is readable");
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

fn mutate(rng: &mut StdRng, seeds: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut data = seeds[rng.random_range(0..seeds.len())].1.clone();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=data.len());
        match rng.random_range(0..6) {
            0 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 => data.truncate(at),
            2 if at < data.len() => {
                let end = rng.random_range(at..=data.len());
                data.drain(at..end);
            }
            3 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            4 => {
                // A slice of another seed: fields from one document in another.
                let other = &seeds[rng.random_range(0..seeds.len())].1;
                let start = rng.random_range(0..=other.len());
                let end = rng.random_range(start..=other.len());
                data.splice(at..at, other[start..end].iter().copied());
            }
            _ => data.insert(at, rng.random()),
        }
    }
    data.truncate(MAX_LEN);
    data
}

/// Runs one input, turning a panic into a failure that shows the input.
fn check(target: &str, run: berth_fuzz::targets::Run, data: &[u8], origin: &str) {
    if std::panic::catch_unwind(|| run(data)).is_err() {
        panic!(
            "fuzz target {target} failed on {origin}: {:?}\n(save it under fuzz/regressions/{target}/ and fix the parser; docs/TESTING.md)",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn every_target_holds_on_its_seeds_regressions_and_seeded_mutations() {
    for (index, (target, run)) in berth_fuzz::targets::ALL.iter().enumerate() {
        let seeds = inputs(target);
        assert!(
            !seeds.is_empty(),
            "fuzz target {target} has no seeds: add a few realistic inputs under fuzz/corpus/{target}/"
        );
        for (path, data) in &seeds {
            check(target, *run, data, &path.display().to_string());
        }
        let mut rng = StdRng::seed_from_u64(index as u64 + 1);
        for n in 0..MUTATIONS {
            let data = mutate(&mut rng, &seeds);
            check(
                target,
                *run,
                &data,
                &format!("mutation {n} (seed {})", index + 1),
            );
        }
    }
}

#[test]
fn every_target_has_a_libfuzzer_binary() {
    // The libFuzzer crate lists each target; one missing there would never be fuzzed.
    let manifest = std::fs::read_to_string(repo_root().join("fuzz/Cargo.toml"))
        .expect("fuzz/Cargo.toml is readable");
    for (target, _) in berth_fuzz::targets::ALL {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {target}"
        );
    }
}
