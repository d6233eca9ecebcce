//! End-to-end tests: the real badge binary, the real kubectl, real TLS, on 127.0.0.1.
//! One test binary; each test starts its own server on port 0.
#![allow(clippy::unwrap_used)]

mod agent;
mod api_core;
mod authz_paths;
mod bootstrap;
mod cli;
mod encryption;
mod ha;
mod ha_faults;
mod ha_history;
mod kubectl;
mod limits;
mod metadata;
mod nodes;
mod openapi;
mod rbac;
mod reviews;
mod tokens;
mod workflow;

use badge_testkit::TestServer;

pub fn server() -> TestServer {
    TestServer::start(env!("CARGO_BIN_EXE_badge"))
}

/// Polls `check` until it returns true or thirty seconds pass (generous: CI machines are
/// slow and shared; a passing check returns as soon as it holds).
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}
