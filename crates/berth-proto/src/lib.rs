//! Protobuf contracts of every internal link between Berth roles.
//!
//! Owns: the generated message and service types, nothing else. Must never depend on any
//! other Berth crate: every role depends on this one, so it stays at the bottom.

#![allow(clippy::all, missing_docs)]

/// The agent <-> server stream (`berth.agent.v1`).
pub mod agent {
    pub mod v1 {
        tonic::include_proto!("berth.agent.v1");
    }
}

/// Live diagnostics: agents, gateways and their users (`berth.diag.v1`).
pub mod diag {
    pub mod v1 {
        tonic::include_proto!("berth.diag.v1");
    }
}

/// The registry's native watch stream (`berth.registry.v1`).
pub mod registry {
    pub mod v1 {
        tonic::include_proto!("berth.registry.v1");
    }
}

/// The Nacos 2.x gRPC contract (no protobuf package: the SDKs call `/Request/request`
/// and `/BiRequestStream/requestBiStream`), served by the registry on its gRPC port.
#[allow(non_camel_case_types)]
pub mod nacos {
    tonic::include_proto!("_");
}
