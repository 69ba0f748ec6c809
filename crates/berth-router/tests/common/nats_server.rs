//! The real `nats-server` of these tests lives in the shared test harness, which the
//! black-box router test of the `berth` binary uses too.

pub use berth_testkit::nats::NatsServer;
