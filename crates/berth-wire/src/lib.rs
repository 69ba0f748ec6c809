//! The one mapping between `berth-core`'s vocabulary and the agent link's protobuf
//! messages (`berth.agent.v1`), so the server and the agent encode and decode them the
//! same way.
//!
//! - [`launch`]: an app's spec -> `StartInstance` (the server's order), and
//!   `StartInstance` <-> [`berth_core::launch::InstanceSpec`] (the agent's validated copy).
//! - [`status`]: instance states, resources and `InstanceStatus` both ways.
//!
//! Owns: conversions only, pure functions over values. Not a role: must never depend on
//! any crate but `berth-core` and `berth-proto` (no I/O, no runtime, no store records).

pub mod launch;
pub mod status;

pub use launch::{launch_from_pb, launch_to_pb, start_message};
pub use status::{
    request_from_pb, request_to_pb, resources_from_pb, state_from_pb, state_to_pb, status_from_pb,
    status_to_pb,
};
