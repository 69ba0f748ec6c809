//! Berth's domain: what an app is, how it is validated, what a node offers, and where
//! instances go.
//!
//! Owns: ids, [`spec::AppSpec`] and its validation, resources (as requested and as
//! accounted), placement constraints, instance states, the launch spec of one instance
//! ([`launch`]: command line, resolved health checks), version ids, launch backoff,
//! deployment records, the scheduler, access control ([`acl`]: policies, capabilities) and what `berth exec` may run ([`exec`]). This is the one vocabulary the server and the
//! agent share; `berth-wire` maps it to and from protobuf. Everything here is pure logic
//! over plain values so it can be tested exhaustively and shared by every role.
//! Must never depend on I/O (no files, sockets, clocks, async runtimes), on protobuf, nor
//! on any other Berth crate: time comes in as arguments.

pub mod acl;
pub mod backoff;
pub mod constraint;
pub mod deployment;
pub mod exec;
pub mod id;
pub mod instance;
pub mod launch;
pub mod resources;
pub mod scheduler;
pub mod spec;
mod suggest;
pub mod validate;
pub mod version;

pub use deployment::{Deployment, DeploymentId, DeploymentKind, DeploymentState};
pub use id::{AppId, IdError, InstanceId, NodeId};
pub use resources::{ResourceRequest, Resources};
pub use spec::AppSpec;
pub use validate::{FieldError, SpecErrors};
pub use version::VersionId;
