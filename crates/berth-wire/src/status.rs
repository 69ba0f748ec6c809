//! Instance states, resources and instance statuses on the wire.

use berth_core::instance::{InstanceState, InstanceStatus};
use berth_core::{InstanceId, ResourceRequest, Resources};
use berth_proto::agent::v1 as pb;

/// A reported state. An agent that leaves it unset is still starting the instance.
pub fn state_from_pb(s: pb::InstanceState) -> InstanceState {
    use pb::InstanceState as P;
    match s {
        P::Unspecified | P::Starting => InstanceState::Starting,
        P::Running => InstanceState::Running,
        P::Healthy => InstanceState::Healthy,
        P::Unhealthy => InstanceState::Unhealthy,
        P::Stopping => InstanceState::Stopping,
        P::Exited => InstanceState::Exited,
        P::Failed => InstanceState::Failed,
    }
}

/// The state an agent reports. Pending and lost are the server's own judgements and
/// have no wire form (unspecified).
pub fn state_to_pb(s: InstanceState) -> pb::InstanceState {
    use pb::InstanceState as P;
    match s {
        InstanceState::Starting => P::Starting,
        InstanceState::Running => P::Running,
        InstanceState::Healthy => P::Healthy,
        InstanceState::Unhealthy => P::Unhealthy,
        InstanceState::Stopping => P::Stopping,
        InstanceState::Exited => P::Exited,
        InstanceState::Failed => P::Failed,
        InstanceState::Pending | InstanceState::Lost => P::Unspecified,
    }
}

/// What reported resources reserve (cpus rounded up to thousandths).
pub fn resources_from_pb(r: &pb::Resources) -> Resources {
    request_from_pb(r).reserve()
}

/// Resources exactly as sent.
pub fn request_from_pb(r: &pb::Resources) -> ResourceRequest {
    ResourceRequest {
        cpus: r.cpus,
        mem_mib: r.mem_mib,
        disk_mib: r.disk_mib,
    }
}

pub fn request_to_pb(r: &ResourceRequest) -> pb::Resources {
    pb::Resources {
        cpus: r.cpus,
        mem_mib: r.mem_mib,
        disk_mib: r.disk_mib,
    }
}

/// A reported status, taken as reported (ids unchecked: the agent checked them).
pub fn status_from_pb(s: &pb::InstanceStatus) -> InstanceStatus {
    InstanceStatus {
        instance_id: InstanceId::new(s.instance_id.clone()),
        app_id: s.app_id.clone(),
        app_version: s.app_version,
        state: state_from_pb(s.state()),
        ports: s.ports.clone(),
        pid: s.pid,
        started_at_ms: s.started_at_ms,
        updated_at_ms: s.updated_at_ms,
        exit_code: s.exit_code,
        message: s.message.clone(),
        stderr_tail: s.stderr_tail.clone(),
        resources: s
            .resources
            .as_ref()
            .map(request_from_pb)
            .unwrap_or_default(),
    }
}

pub fn status_to_pb(s: &InstanceStatus) -> pb::InstanceStatus {
    pb::InstanceStatus {
        instance_id: s.instance_id.to_string(),
        app_id: s.app_id.clone(),
        app_version: s.app_version,
        state: state_to_pb(s.state) as i32,
        ports: s.ports.clone(),
        pid: s.pid,
        started_at_ms: s.started_at_ms,
        updated_at_ms: s.updated_at_ms,
        exit_code: s.exit_code,
        message: s.message.clone(),
        stderr_tail: s.stderr_tail.clone(),
        resources: Some(request_to_pb(&s.resources)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_states_round_trip() {
        use InstanceState::*;
        for s in [
            Starting, Running, Healthy, Unhealthy, Stopping, Exited, Failed,
        ] {
            assert_eq!(state_from_pb(state_to_pb(s)), s);
        }
        assert_eq!(state_to_pb(Pending), pb::InstanceState::Unspecified);
        assert_eq!(state_to_pb(Lost), pb::InstanceState::Unspecified);
        assert_eq!(state_from_pb(pb::InstanceState::Unspecified), Starting);
    }

    #[test]
    fn resources_keep_what_was_asked_and_reserve_rounded_up() {
        let wire = pb::Resources {
            cpus: 2.007,
            mem_mib: 64,
            disk_mib: 5,
        };
        let request = request_from_pb(&wire);
        assert_eq!(request_to_pb(&request), wire);
        assert_eq!(
            resources_from_pb(&wire),
            Resources::new(2.007, 64, 5),
            "the server's rounding, unchanged"
        );
    }

    #[test]
    fn statuses_round_trip() {
        let status = pb::InstanceStatus {
            instance_id: "shop-web.1f".into(),
            app_id: "shop/web".into(),
            app_version: 3,
            state: pb::InstanceState::Healthy as i32,
            ports: vec![31000, 31001],
            pid: 4242,
            started_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_001_000,
            exit_code: Some(3),
            message: "passing".into(),
            stderr_tail: "oops\n".into(),
            resources: Some(pb::Resources {
                cpus: 0.25,
                mem_mib: 128,
                disk_mib: 0,
            }),
        };
        let core = status_from_pb(&status);
        assert_eq!(core.state, InstanceState::Healthy);
        assert_eq!(core.resources.reserve(), Resources::new(0.25, 128, 0));
        assert_eq!(status_to_pb(&core), status);
        // No resources reported: nothing held.
        let bare = pb::InstanceStatus {
            resources: None,
            ..status
        };
        assert_eq!(status_from_pb(&bare).resources, ResourceRequest::default());
    }
}
