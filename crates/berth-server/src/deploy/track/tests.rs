use berth_core::deployment::{DeploymentKind, Target};
use berth_core::{AppSpec, VersionId};
use berth_proto::agent::v1 as pb;
use tokio::time::Instant;

use super::*;
use crate::events::EventBus;

const V1: u64 = 1_000;
const V2: u64 = 2_000;

fn app(v: u64, checked: bool) -> AppVersion {
    let mut spec = AppSpec::minimal("web", "x");
    spec.instances = 2;
    if checked {
        spec.health_checks = serde_json::from_str(r#"[{"protocol": "tcp"}]"#).unwrap();
    }
    let first = AppVersion::first(spec.clone(), VersionId(V1));
    if v == V1 {
        first
    } else {
        spec.cmd = Some("y".into());
        first.next(spec, VersionId(v), berth_store::Change::Updated)
    }
}

fn inst(id: &str, version: u64, state: pb::InstanceState) -> pb::InstanceStatus {
    pb::InstanceStatus {
        instance_id: id.into(),
        app_id: "web".into(),
        app_version: version,
        state: state as i32,
        started_at_ms: 5,
        ..Default::default()
    }
}

/// Real state with one node running `instances`.
fn state(instances: Vec<pb::InstanceStatus>) -> RealState {
    let mut s = RealState::default();
    let hello = pb::Hello {
        node_id: "n1".into(),
        total: Some(pb::Resources {
            cpus: 4.0,
            mem_mib: 4096,
            disk_mib: 0,
        }),
        instances,
        ..Default::default()
    };
    s.connect(
        crate::agents::wire::hello(&hello),
        Instant::now(),
        &EventBus::new(),
    );
    s
}

fn update() -> Tracked {
    let t = |v| Target {
        version: VersionId(v),
        config_version: VersionId(v),
        instances: 2,
    };
    let d = Deployment::new(
        berth_core::AppId::parse("web").unwrap(),
        DeploymentKind::Update,
        Some(t(V1)),
        t(V2),
        true,
        10_000,
        0,
    );
    Tracked::new(d, 0)
}

use pb::InstanceState::{Exited, Healthy, Running, Stopping};

#[test]
fn done_only_once_new_ones_are_healthy_and_old_ones_exited() {
    let mut t = update();
    let app = app(V2, true);
    let s = state(vec![
        inst("a", V1, Healthy),
        inst("b", V1, Healthy),
        inst("c", V2, Healthy),
        inst("d", V2, Running),
    ]);
    let (verdict, said) = t.evaluate(Some(&app), &s, 100);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(t.d.progress.ready, 1);
    assert_eq!(t.d.progress.leaving, 2);
    assert!(
        said.iter()
            .any(|m| m.contains("c on n1 is healthy (1/2 ready)")),
        "{said:?}"
    );

    let s = state(vec![
        inst("a", V1, Exited),
        inst("b", V1, Stopping),
        inst("c", V2, Healthy),
        inst("d", V2, Healthy),
    ]);
    let (verdict, said) = t.evaluate(Some(&app), &s, 200);
    assert_eq!(verdict, Verdict::Continue, "b has not exited yet");
    assert!(
        said.iter()
            .any(|m| m.contains("instance a (version 1000) stopped")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|m| m.starts_with("draining instance b")),
        "{said:?}"
    );

    let s = state(vec![
        inst("a", V1, Exited),
        inst("b", V1, Exited),
        inst("c", V2, Healthy),
        inst("d", V2, Healthy),
    ]);
    let (verdict, _) = t.evaluate(Some(&app), &s, 300);
    assert_eq!(verdict, Verdict::Done);
}

#[test]
fn without_checks_an_instance_counts_after_a_second_up() {
    let mut t = update();
    let app = app(V2, false);
    let s = state(vec![inst("c", V2, Running), inst("d", V2, Running)]);
    assert_eq!(t.evaluate(Some(&app), &s, 1_000).0, Verdict::Continue);
    assert_eq!(t.d.progress.ready, 0);
    assert_eq!(t.evaluate(Some(&app), &s, 1_999).0, Verdict::Continue);
    assert_eq!(t.evaluate(Some(&app), &s, 2_000).0, Verdict::Done);
}

#[test]
fn a_deadline_and_a_crash_loop_fail_it() {
    let app = app(V2, true);
    let s = state(vec![inst("a", V1, Healthy), inst("c", V2, Running)]);
    let mut t = update();
    let (verdict, _) = t.evaluate(Some(&app), &s, 10_000);
    assert!(
        matches!(&verdict, Verdict::Fail(r) if r.contains("not done within 10 s: 0/2 ready")),
        "{verdict:?}"
    );

    let mut t = update();
    let mut s = s;
    for _ in 0..3 {
        s.note_failure("web", Instant::now(), None);
    }
    let (verdict, _) = t.evaluate(Some(&app), &s, 100);
    assert!(
        matches!(&verdict, Verdict::Fail(r) if r.contains("keep failing (3 failures in a row)")),
        "{verdict:?}"
    );
}

#[test]
fn a_loaded_deployment_does_not_repeat_itself_and_a_gone_app_cancels() {
    let app = app(V2, true);
    let s = state(vec![inst("a", V1, Healthy), inst("c", V2, Healthy)]);
    let mut t = Tracked::loaded(update().d);
    let (_, said) = t.evaluate(Some(&app), &s, 100);
    assert!(said.is_empty(), "{said:?}");
    assert_eq!(t.d.progress.ready, 1, "it still counts");
    let (verdict, _) = t.evaluate(None, &s, 100);
    assert!(matches!(verdict, Verdict::Cancel(_)));
}
