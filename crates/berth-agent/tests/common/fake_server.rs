//! The fake server of these tests lives in the shared test harness, which the black-box
//! agent test of the `berth` binary uses too.

pub use berth_testkit::fake_server::{FakeServer, start_cmd, stop_cmd};
