//! The fake server of these tests lives in the shared test harness, which the black-box
//! agent test of the `berth` binary uses too.

// Not every test binary that compiles `common` uses all of it.
#[allow(unused_imports)]
pub use berth_testkit::fake_server::{FakeServer, start_cmd, stop_cmd};
