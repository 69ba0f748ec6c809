//! One module per fuzz target, each a `run(&[u8])` that parses one outside input and
//! panics when a property fails. `fuzz/` drives them with libFuzzer (`scripts/fuzz`); the
//! test suite replays every seed and past crash and a seeded batch of mutations of them
//! (`tests/short_pass.rs`).

pub mod acl_policy_json;
pub mod acl_policy_toml;
pub mod app_spec_json;
pub mod app_spec_toml;
pub mod consul_registration;
pub mod exec_frames;
pub mod gorouter_nats;
pub mod nacos_grpc_payload;
pub mod nacos_params;
pub mod router_http_head;
pub mod router_upstreams;

/// A target's entry point: one input, a panic when a property fails.
pub type Run = fn(&[u8]);

/// Every target by the name `fuzz/corpus/NAME` and `fuzz/regressions/NAME` use.
pub const ALL: &[(&str, Run)] = &[
    ("acl_policy_json", acl_policy_json::run),
    ("acl_policy_toml", acl_policy_toml::run),
    ("app_spec_json", app_spec_json::run),
    ("app_spec_toml", app_spec_toml::run),
    ("consul_registration", consul_registration::run),
    ("exec_frames", exec_frames::run),
    ("gorouter_nats", gorouter_nats::run),
    ("nacos_grpc_payload", nacos_grpc_payload::run),
    ("nacos_params", nacos_params::run),
    ("router_http_head", router_http_head::run),
    ("router_upstreams", router_upstreams::run),
];
