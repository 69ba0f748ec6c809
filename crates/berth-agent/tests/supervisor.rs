//! The supervisor with the real process driver: start, crash, stop, idempotence, and
//! re-adoption by a second supervisor on the same data folder (an agent restart).

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_agent::driver::{Drivers, LogRotator, ProcessDriver};
use berth_agent::metrics::AgentMetrics;
use berth_agent::ports::PortRange;
use berth_agent::record::RecordStore;
use berth_agent::supervisor::{Supervisor, SupervisorConfig};
use berth_agent::tasks::Tasks;
use berth_proto::agent::v1 as pb;
use common::{status_of, wait_for_state};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

fn config() -> SupervisorConfig {
    SupervisorConfig {
        node_id: "node-a".into(),
        advertise: "127.0.0.1".into(),
        port_range: PortRange {
            first: 31000,
            last: 31999,
        },
        log_rotator: LogRotator {
            max_bytes: 1 << 20,
            keep: 1,
        },
        housekeeping_interval: Duration::from_millis(200),
        terminal_retention: Duration::from_secs(60),
        stderr_tail_lines: 5,
        registry_beat: Duration::from_secs(5),
        default_grace: Duration::from_secs(2),
        log_addr: None,
    }
}

fn supervisor(dir: &std::path::Path) -> (Supervisor, CancellationToken) {
    supervisor_with(dir, config())
}

fn supervisor_with(
    dir: &std::path::Path,
    config: SupervisorConfig,
) -> (Supervisor, CancellationToken) {
    let token = CancellationToken::new();
    let sup = Supervisor::new(
        config,
        Drivers::new(Arc::new(ProcessDriver::new(Duration::from_millis(50)))),
        RecordStore::open(dir).unwrap(),
        None,
        Tasks::new(token.clone()),
        Arc::new(AgentMetrics::default()),
    );
    sup.spawn_housekeeping();
    (sup, token)
}

fn start(id: &str, cmd: &str, ports: u32) -> pb::StartInstance {
    pb::StartInstance {
        instance_id: id.into(),
        app_id: "shop/web".into(),
        app_version: 7,
        cmd: cmd.into(),
        port_count: ports,
        env: [("GREETING".to_string(), "hi".to_string())].into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn runs_an_instance_with_ports_and_env_then_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let (sup, _token) = supervisor(dir.path());
    let mut events = sup.subscribe();
    sup.start_instance(&start(
        "web-1",
        "echo \"$GREETING $PORT $PORT0 $PORT1 $BERTH_APP_ID $BERTH_INSTANCE_ID $HOST $BERTH_NODE\" > env.txt; exec python3 -m http.server $PORT --bind 127.0.0.1",
        2,
    ));
    let running = wait_for_state(&mut events, "web-1", pb::InstanceState::Running).await;
    assert_eq!(running.ports.len(), 2);
    assert!(running.pid > 0);
    // No checks: healthy once port 0 accepts connections.
    wait_for_state(&mut events, "web-1", pb::InstanceState::Healthy).await;
    let env = std::fs::read_to_string(dir.path().join("instances/web-1/work/env.txt")).unwrap();
    let (p0, p1) = (running.ports[0], running.ports[1]);
    assert_eq!(
        env.trim(),
        format!("hi {p0} {p0} {p1} shop/web web-1 127.0.0.1 node-a")
    );
    // A second start of the same id is answered with its status, nothing new runs.
    sup.start_instance(&start("web-1", "exit 1", 0));
    let repeat = common::next_event(&mut events, "web-1").await;
    assert_eq!(repeat.pid, running.pid);

    sup.stop_instance(&pb::StopInstance {
        instance_id: "web-1".into(),
        drain_ms: 10,
        grace_ms: 2000,
        reason: "scaled down".into(),
    });
    wait_for_state(&mut events, "web-1", pb::InstanceState::Stopping).await;
    let exited = wait_for_state(&mut events, "web-1", pb::InstanceState::Exited).await;
    assert!(exited.message.contains("stopped"), "{}", exited.message);
    assert_eq!(exited.exit_code, Some(128 + 15));
    // Its ports are free for the next instance.
    assert!(std::net::TcpListener::bind(("127.0.0.1", p0 as u16)).is_ok());
}

#[tokio::test]
async fn a_crash_is_failed_with_exit_code_and_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let (sup, _token) = supervisor(dir.path());
    let mut events = sup.subscribe();
    sup.start_instance(&start(
        "crash-1",
        "for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 3",
        0,
    ));
    let failed = wait_for_state(&mut events, "crash-1", pb::InstanceState::Failed).await;
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.message, "exited with code 3");
    assert_eq!(failed.stderr_tail, "line3\nline4\nline5\nline6\nline7");
    assert_eq!(
        status_of(&sup, "crash-1").state,
        pb::InstanceState::Failed as i32
    );
}

#[tokio::test]
async fn bad_requests_fail_with_the_field_named_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let (sup, _token) = supervisor(dir.path());
    let mut events = sup.subscribe();
    let mut bad = start("bad-1", "true", 0);
    bad.args = vec!["/bin/true".into()];
    sup.start_instance(&bad);
    let failed = wait_for_state(&mut events, "bad-1", pb::InstanceState::Failed).await;
    assert!(
        failed.message.contains("StartInstance.cmd"),
        "{}",
        failed.message
    );

    let mut missing = start("bad-2", "", 0);
    missing.args = vec!["/no/such/program".into()];
    sup.start_instance(&missing);
    let failed = wait_for_state(&mut events, "bad-2", pb::InstanceState::Failed).await;
    assert!(
        failed.message.contains("/no/such/program"),
        "{}",
        failed.message
    );

    // An image app on a node without a Docker engine: the driver is named, and what the
    // node offers instead.
    let mut docker = start("bad-3", "", 0);
    docker.image = "shop/web:1".into();
    sup.start_instance(&docker);
    let failed = wait_for_state(&mut events, "bad-3", pb::InstanceState::Failed).await;
    assert!(
        failed
            .message
            .contains("driver \"docker\" is not available")
            && failed.message.contains("[\"process\"]"),
        "{}",
        failed.message
    );

    // Stops of unknown or invalid ids are harmless.
    sup.stop_instance(&pb::StopInstance {
        instance_id: "../x".into(),
        ..Default::default()
    });
    sup.stop_instance(&pb::StopInstance {
        instance_id: "nobody".into(),
        ..Default::default()
    });
}

#[tokio::test]
async fn a_restarted_supervisor_re_adopts_live_instances_and_reports_dead_ones() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let (first, token) = supervisor(dir.path());
    let mut events = first.subscribe();
    first.start_instance(&start("keep-1", "exec sleep 300", 0));
    first.start_instance(&start("dies-1", "exec sleep 300", 0));
    let keep = wait_for_state(&mut events, "keep-1", pb::InstanceState::Healthy).await;
    let dies = wait_for_state(&mut events, "dies-1", pb::InstanceState::Healthy).await;
    // The agent goes away; its instances do not.
    token.cancel();
    drop(first);
    kill(Pid::from_raw(dies.pid as i32), Signal::SIGKILL).unwrap();
    common::wait_gone(dies.pid).await;
    assert!(berth_agent::procfs::stat(keep.pid).is_some_and(|s| s.is_alive()));

    let (second, _token2) = supervisor(dir.path());
    let mut events = second.subscribe();
    assert!(second.recover().is_empty());
    let adopted = status_of(&second, "keep-1");
    assert_eq!(adopted.pid, keep.pid, "same process, not restarted");
    assert_eq!(adopted.state, pb::InstanceState::Healthy as i32);
    let lost = status_of(&second, "dies-1");
    assert_eq!(lost.state, pb::InstanceState::Exited as i32);
    assert!(lost.message.contains("not running"), "{}", lost.message);

    // The adopted process is watched: its end is noticed without a wait status.
    kill(Pid::from_raw(keep.pid as i32), Signal::SIGTERM).unwrap();
    let ended = wait_for_state(&mut events, "keep-1", pb::InstanceState::Failed).await;
    assert!(ended.message.contains("re-adopted"), "{}", ended.message);
}

#[tokio::test]
async fn a_stop_of_a_re_adopted_instance_reaches_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let (first, token) = supervisor(dir.path());
    let mut events = first.subscribe();
    first.start_instance(&start("grp-1", "sleep 300 & wait", 0));
    let running = wait_for_state(&mut events, "grp-1", pb::InstanceState::Healthy).await;
    token.cancel();
    drop(first);
    let (second, _token2) = supervisor(dir.path());
    let mut events = second.subscribe();
    second.recover();
    second.stop_instance(&pb::StopInstance {
        instance_id: "grp-1".into(),
        drain_ms: 0,
        grace_ms: 1000,
        reason: String::new(),
    });
    let exited = wait_for_state(&mut events, "grp-1", pb::InstanceState::Exited).await;
    assert!(exited.message.contains("stopped"), "{}", exited.message);
    common::wait_gone(running.pid).await;
}

#[tokio::test]
async fn logs_are_rotated_at_the_cap_and_finished_instances_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let mut config = config();
    config.log_rotator = LogRotator {
        max_bytes: 1000,
        keep: 2,
    };
    config.terminal_retention = Duration::from_millis(300);
    let (sup, _token) = supervisor_with(dir.path(), config);
    let mut events = sup.subscribe();
    sup.start_instance(&start(
        "chatty-1",
        "for i in $(seq 1 500); do echo line $i; done; exec sleep 300",
        0,
    ));
    wait_for_state(&mut events, "chatty-1", pb::InstanceState::Healthy).await;
    let logs = dir.path().join("instances/chatty-1");
    // A housekeeping pass may land while the program still writes, so the last line can
    // end up in the live file or in the newest copy; either way the live file ends under
    // the cap once the writing stops.
    common::wait_until("the log was rotated under the cap", || {
        let (Ok(rotated), Ok(live)) = (
            std::fs::read_to_string(logs.join("stdout.log.1")),
            std::fs::read_to_string(logs.join("stdout.log")),
        ) else {
            return false;
        };
        live.len() <= 1000 && (rotated + &live).ends_with("line 500\n")
    })
    .await;

    sup.stop_instance(&pb::StopInstance {
        instance_id: "chatty-1".into(),
        drain_ms: 0,
        grace_ms: 1000,
        reason: String::new(),
    });
    wait_for_state(&mut events, "chatty-1", pb::InstanceState::Exited).await;
    common::wait_until("the finished instance is forgotten", || {
        sup.statuses().is_empty() && !logs.exists()
    })
    .await;
}
