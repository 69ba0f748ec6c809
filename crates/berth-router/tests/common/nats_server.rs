//! The real `nats-server` of these tests lives in the shared test harness, which the
//! black-box router test of the `berth` binary uses too.

// Not every test binary that compiles `common` starts one.
#[allow(unused_imports)]
pub use berth_testkit::nats::NatsServer;
