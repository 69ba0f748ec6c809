//! Black-box proof of zero-downtime deployments: `berth dev` (server, agent with the
//! process driver, registry, router: every role, real processes) on ephemeral loopback
//! ports, a real HTTP app, and a steady stream of idempotent GETs through the router
//! while the app is rolled, restarted, rolled back and cancelled. Every test counts
//! failed requests and expects none.
//!
//! The app (Python's threading HTTP server) takes 100 ms per request and dies at once on
//! SIGTERM, like many real programs: requests are in flight whenever an instance is
//! stopped, so only the drain (deregister, let in-flight requests finish, then SIGTERM)
//! keeps every request whole. With `stop_drain` at 0 these tests fail.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_testkit::{BerthProcess, InstanceReaper, dev_command, temp_dir, wait_for, wait_until};
use common::{BIN, WAIT_DEPLOY, cli};
use serde_json::{Value, json};

const HOST: &str = "deploy.localhost";
const APP: &str = "demo/deploy";
/// Request loops; each waits for its answer (100 ms) then sends the next: ~80 req/s.
const WORKERS: usize = 8;

/// `berth dev` with every listener on an ephemeral port and short timings.
struct Dev {
    /// Taken by [`Dev::finish`].
    process: Option<BerthProcess>,
    /// Kills the app's instances if a test fails before removing its app (instances
    /// outlive their agent by design); declared before `data`, which it reads.
    _reaper: InstanceReaper,
    data: tempfile::TempDir,
    http: reqwest::Client,
}

impl Dev {
    async fn start() -> Dev {
        let data = temp_dir();
        let mut command = dev_command(BIN, data.path());
        command
            .arg("--no-demo")
            .env("BERTH_SERVER_STARTUP_GRACE", "500ms")
            .env("BERTH_SERVER_RECONCILE_INTERVAL", "250ms")
            // Deregistered-to-SIGTERM: far above the router's propagation (tens of ms).
            .env("BERTH_SERVER_STOP_DRAIN", "1s")
            .env("BERTH_SERVER_STOP_GRACE", "3s");
        let process = BerthProcess::spawn(command).await;
        Dev {
            process: Some(process),
            _reaper: InstanceReaper::new([data.path().join("agent")]),
            data,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn api(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.process.as_ref().unwrap().addr("api")
        )
    }

    fn router(&self) -> SocketAddr {
        self.process.as_ref().unwrap().addr("router")
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(self.api(path)).send().await.unwrap();
        r.json().await.unwrap()
    }

    async fn put(&self, spec: &Value, query: &str) -> (u16, Value) {
        let r = self
            .http
            .put(self.api(&format!("/v1/apps/{APP}{query}")))
            .json(spec)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn deployment(&self, id: &str) -> Value {
        self.get(&format!("/v1/deployments/{id}")).await
    }

    async fn wait_deployment(&self, id: &str, state: &str) -> Value {
        wait_for(&format!("deployment {id} {state}"), WAIT_DEPLOY, || async {
            let d = self.deployment(id).await;
            let now = d["state"].as_str().unwrap_or("").to_string();
            assert!(
                now == state || now == "running" || now == "rolling_back",
                "deployment {id} ended {now}, not {state}: {d:#}"
            );
            (now == state).then_some(d)
        })
        .await
    }

    /// Active instances (pending to unhealthy) of the app: (id, version).
    async fn instances(&self) -> Vec<(String, u64)> {
        let v = self.get(&format!("/v1/instances?app={APP}")).await;
        let list = v["instances"].as_array().cloned().unwrap_or_default();
        list.iter()
            .filter(|i| {
                matches!(
                    i["state"].as_str(),
                    Some("starting" | "running" | "healthy" | "unhealthy" | "stopping")
                )
            })
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_string(),
                    i["version"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Runs a `berth` client command against this platform.
    async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = cli(self.process.as_ref().unwrap().addr("api"), args).await;
        (out.ok, out.stdout, out.stderr)
    }

    fn write(&self, name: &str, spec: &Value) -> PathBuf {
        let path = self.data.path().join(name);
        std::fs::write(&path, spec.to_string()).unwrap();
        path
    }

    fn work_dir(&self, instance: &str) -> PathBuf {
        self.data
            .path()
            .join("agent/instances")
            .join(instance)
            .join("work")
    }

    /// Removes the app, waits for its processes to exit, stops `berth dev`.
    async fn finish(mut self) {
        let r = self
            .http
            .delete(self.api(&format!("/v1/apps/{APP}")))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        wait_until("the app's instances to exit", WAIT_DEPLOY, || async {
            self.instances().await.is_empty()
        })
        .await;
        let process = self.process.take().unwrap();
        assert!(process.terminate().await.success());
    }
}

/// Answers `/` after 100 ms with its instance id and version; `/healthz` at once.
const APP_PY: &str = r#"
import os, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
GREETING = "Hello from Berth! instance %s, version %s\n" % (
    os.environ["BERTH_INSTANCE_ID"], os.environ["BERTH_APP_VERSION"])
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok\n"
        elif self.path == "/":
            time.sleep(0.1)
            body = GREETING.encode()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// The app spec; `dir` holds `app.py`.
fn spec(dir: &std::path::Path, release: &str, health_path: &str) -> Value {
    let script = dir.join("app.py");
    if !script.exists() {
        std::fs::write(&script, APP_PY).unwrap();
    }
    json!({
        "id": APP,
        "args": ["/usr/bin/python3", script.to_str().unwrap()],
        "instances": 3,
        "cpus": 0.01,
        "mem": 16,
        "env": {"RELEASE": release},
        "routes": [HOST],
        "health_checks": [{
            "protocol": "http", "path": health_path,
            "grace_period_seconds": 20, "interval_seconds": 1, "timeout_seconds": 1
        }]
    })
}

/// A steady stream of GETs through the router: `workers` loops, one request every
/// `every` each. Records failures and which version answered.
struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default, Debug)]
struct Stats {
    ok: u64,
    failures: Vec<String>,
    /// Answers per app version.
    versions: BTreeMap<String, u64>,
    /// The instance and version of the latest answers.
    last: Vec<(String, String)>,
}

impl Load {
    fn start(router: SocketAddr, workers: usize, every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, stats, client) = (stop.clone(), stats.clone(), client.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let result = client
                            .get(format!("http://{router}/"))
                            .header("host", HOST)
                            .send()
                            .await;
                        let outcome = match result {
                            Ok(r) if r.status().is_success() => {
                                r.text().await.map_err(|e| format!("body: {e}"))
                            }
                            Ok(r) => Err(format!(
                                "HTTP {} {:?}: {}",
                                r.status(),
                                r.headers().get("x-berth-router-error").cloned(),
                                r.text().await.unwrap_or_default()
                            )),
                            Err(e) => Err(format!("{e:?}")),
                        };
                        let mut s = stats.lock().unwrap();
                        match outcome {
                            Ok(body) => {
                                s.ok += 1;
                                // "Hello from Berth! instance ID, version V"
                                let instance = body
                                    .split("instance ")
                                    .nth(1)
                                    .and_then(|r| r.split(',').next())
                                    .unwrap_or("")
                                    .to_string();
                                let version = body
                                    .rsplit("version ")
                                    .next()
                                    .unwrap_or("")
                                    .trim()
                                    .to_string();
                                *s.versions.entry(version.clone()).or_default() += 1;
                                s.last.push((instance, version));
                                if s.last.len() > 60 {
                                    s.last.remove(0);
                                }
                            }
                            Err(e) => s.failures.push(e),
                        }
                    }
                })
            })
            .collect();
        Load { stop, stats, tasks }
    }

    fn ok(&self) -> u64 {
        self.stats.lock().unwrap().ok
    }

    /// Instances that answered among the latest requests.
    fn recent_instances(&self) -> HashSet<String> {
        let s = self.stats.lock().unwrap();
        s.last.iter().map(|(i, _)| i.clone()).collect()
    }

    fn recent_versions(&self) -> HashSet<String> {
        let s = self.stats.lock().unwrap();
        s.last.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Stops the load; panics naming every failed request.
    async fn finish(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let stats = Arc::try_unwrap(self.stats).unwrap().into_inner().unwrap();
        assert!(
            stats.failures.is_empty(),
            "{} of {} requests failed: {:#?}",
            stats.failures.len(),
            stats.ok + stats.failures.len() as u64,
            stats.failures
        );
        stats
    }
}

/// Deploys v1 and waits until the router spreads requests over its 3 instances.
async fn v1_serving(dev: &Dev) -> (u64, Load) {
    let (code, body) = dev.put(&spec(dev.data.path(), "1", "/healthz"), "").await;
    assert_eq!(code, 201, "{body}");
    let v1 = body["config_version"].as_u64().unwrap();
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    dev.wait_deployment(&id, "succeeded").await;
    let load = Load::start(dev.router(), WORKERS, Duration::from_millis(20));
    wait_until(
        "the router spreads over 3 instances",
        WAIT_DEPLOY,
        || async { load.recent_instances().len() == 3 },
    )
    .await;
    (v1, load)
}

fn count(steps: &Value, needle: &str) -> usize {
    steps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["message"].as_str().unwrap().contains(needle))
        .count()
}

#[tokio::test]
async fn a_rolling_deploy_and_a_rolling_restart_under_load_fail_no_request() {
    let dev = Dev::start().await;
    let (v1, load) = v1_serving(&dev).await;
    let before = load.ok();

    // Roll to a new version through the CLI, which shows each step.
    let file = dev.write("v2.json", &spec(dev.data.path(), "2", "/healthz"));
    let (ok, out, err) = dev
        .cli(&["apps", "deploy", "--timeout", "60s", file.to_str().unwrap()])
        .await;
    assert!(ok, "{out}{err}");
    for part in [
        "starting new instance",
        "is healthy (3/3 ready)",
        "draining instance",
        "succeeded",
        "demo/deploy deployed: 3/3 healthy",
    ] {
        assert!(out.contains(part), "{part} missing in:\n{out}");
    }
    let instances = dev.instances().await;
    let v2 = instances[0].1;
    assert!(v2 > v1);
    assert_eq!(instances.len(), 3, "{instances:?}");
    assert!(instances.iter().all(|(_, v)| *v == v2), "{instances:?}");
    wait_until("only v2 answers", WAIT_DEPLOY, || async {
        load.recent_versions() == HashSet::from([v2.to_string()])
    })
    .await;

    // A rolling restart: same version, every instance replaced, new ones first.
    let old: HashSet<String> = instances.into_iter().map(|(id, _)| id).collect();
    let (ok, out, err) = dev.cli(&["apps", "restart", APP, "--timeout", "60s"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("restart started"), "{out}");
    let now = dev.instances().await;
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(now.iter().all(|(id, _)| !old.contains(id)), "{now:?}");

    let stats = load.finish().await;
    assert!(
        stats.ok > before + 100,
        "too few requests to mean anything: {stats:?}"
    );
    assert!(stats.versions.contains_key(&v1.to_string()), "{stats:?}");
    dev.finish().await;
}

#[tokio::test]
async fn a_version_that_never_gets_healthy_rolls_back_and_changes_wait_their_turn() {
    let dev = Dev::start().await;
    let (v1, load) = v1_serving(&dev).await;
    let old: HashSet<String> = dev.instances().await.into_iter().map(|(i, _)| i).collect();

    // Its check answers 404: never healthy; the deadline fails it and it rolls back.
    let bad = dev.write("bad.json", &spec(dev.data.path(), "2", "/not-there"));
    let args = ["apps", "deploy", "--timeout", "3s", bad.to_str().unwrap()];
    let deploy = dev.cli(&args);
    let busy = async {
        // While it runs, another change is refused with the running deployment's id.
        let running = wait_for("the bad deployment", WAIT_DEPLOY, || async {
            let v = dev.get("/v1/deployments?active=true").await;
            v["deployments"][0]["id"].as_str().map(str::to_string)
        })
        .await;
        let other = dev.write("other.json", &spec(dev.data.path(), "3", "/healthz"));
        let (ok, _, err) = dev
            .cli(&["apps", "deploy", "--detach", other.to_str().unwrap()])
            .await;
        assert!(!ok);
        assert!(
            err.contains(&format!("has deployment {running} running")),
            "{err}"
        );
        let (ok, _, err) = dev.cli(&["apps", "scale", APP, "4"]).await;
        assert!(!ok && err.contains("409"), "{err}");
    };
    let ((ok, out, err), ()) = tokio::join!(deploy, busy);
    assert!(!ok, "{out}");
    assert!(err.contains("failed and was rolled back"), "{err}");
    assert!(err.contains("not done within 3 s"), "{err}");
    assert!(out.contains("rolling back to version"), "{out}");
    let now = dev.instances().await;
    assert!(now.iter().all(|(_, v)| *v == v1), "{now:?}");
    let ids: HashSet<String> = now.into_iter().map(|(i, _)| i).collect();
    assert_eq!(ids, old, "the old instances served throughout");

    // Deleting a running deployment rolls it back.
    let (code, body) = dev
        .put(&spec(dev.data.path(), "2", "/not-there"), "?timeout=5m")
        .await;
    assert_eq!(code, 200, "{body}");
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    wait_until("new instances started", WAIT_DEPLOY, || async {
        dev.instances().await.iter().any(|(_, v)| *v != v1)
    })
    .await;
    let (ok, out, err) = dev.cli(&["deployments", "rm", &id]).await;
    assert!(ok, "{out}{err}");
    let d = dev.wait_deployment(&id, "rolled_back").await;
    assert!(count(&d["steps"], "rolling back") >= 1, "{d:#}");
    wait_until("only v1 left", WAIT_DEPLOY, || async {
        dev.instances().await.iter().all(|(_, v)| *v == v1)
    })
    .await;

    // Force stops it where it stands: no rollback, old instances keep serving because
    // the new ones never became healthy.
    let (_, body) = dev
        .put(&spec(dev.data.path(), "2", "/not-there"), "?timeout=5m")
        .await;
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    let v2 = body["config_version"].as_u64().unwrap();
    let (ok, out, err) = dev.cli(&["deployments", "rm", &id, "--force"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("stopped where it stood"), "{out}");
    // The stop is recorded by the deployment's own task, a moment after the answer.
    dev.wait_deployment(&id, "cancelled").await;
    let app = dev.get(&format!("/v1/apps/{APP}")).await;
    assert_eq!(app["config_version"].as_u64(), Some(v2));
    let (ok, list, err) = dev.cli(&["deployments", "list", "--app", APP]).await;
    assert!(ok, "{list}{err}");
    for state in ["cancelled", "rolled_back", "succeeded"] {
        assert!(list.contains(state), "{state} missing in:\n{list}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        load.recent_versions(),
        HashSet::from([v1.to_string()]),
        "v1 still serves"
    );

    load.finish().await;
    dev.finish().await;
}

#[tokio::test]
async fn an_instance_whose_check_fails_leaves_routing_then_is_replaced() {
    let dev = Dev::start().await;
    // A command check the test can flip: healthy while no `sick` file is in the work dir.
    let mut app = spec(dev.data.path(), "1", "/healthz");
    app["health_checks"] = json!([
        {"protocol": "http", "path": "/healthz", "interval_seconds": 1, "timeout_seconds": 1},
        {"protocol": "command", "command": ["/bin/sh", "-c", "test ! -e sick"],
         "interval_seconds": 1, "timeout_seconds": 1, "max_consecutive_failures": 5}
    ]);
    app["backoff_seconds"] = json!(0.2);
    let (code, body) = dev.put(&app, "").await;
    assert_eq!(code, 201, "{body}");
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    dev.wait_deployment(&id, "succeeded").await;
    let load = Load::start(dev.router(), WORKERS, Duration::from_millis(20));
    wait_until("3 instances answer", WAIT_DEPLOY, || async {
        load.recent_instances().len() == 3
    })
    .await;

    let victim = dev.instances().await[0].0.clone();
    std::fs::write(dev.work_dir(&victim).join("sick"), b"").unwrap();
    // Out of routing at its first failed probe, before it counts as unhealthy.
    wait_until("the sick instance stops answering", WAIT_DEPLOY, || async {
        load.recent_instances().len() == 2 && !load.recent_instances().contains(&victim)
    })
    .await;
    // Routing reacted to the first failed probe; the agent has not given its verdict
    // (5 failures one interval apart) yet.
    let v = dev.get(&format!("/v1/instances?app={APP}")).await;
    let state = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == victim.as_str())
        .map(|i| i["state"].clone());
    assert_eq!(state, Some(json!("healthy")), "{v:#}");
    // Then replaced: stopped, and a new one answers.
    wait_until("a replacement answers", WAIT_DEPLOY, || async {
        let ids = load.recent_instances();
        ids.len() == 3 && !ids.contains(&victim)
    })
    .await;
    wait_until("the sick instance is gone", WAIT_DEPLOY, || async {
        let now: Vec<String> = dev.instances().await.into_iter().map(|(i, _)| i).collect();
        now.len() == 3 && !now.contains(&victim)
    })
    .await;

    let (ok, out, err) = dev.cli(&["apps", "show", APP]).await;
    assert!(ok, "{err}");
    assert!(out.contains("health changes:"), "{out}");
    assert!(out.contains("healthy -> unhealthy"), "{out}");
    assert!(
        out.contains("last exit:") && out.contains("unhealthy"),
        "{out}"
    );
    load.finish().await;
    dev.finish().await;
}
