//! Black-box: the off-loopback rules on a real non-loopback address, inside a network
//! namespace this test creates (10.213.0.1 on its own loopback device; no traffic can
//! leave it). Each role refuses to listen there without its credentials, naming the setting; a
//! server given them serves HTTPS there, refuses plain HTTP from that (non-loopback)
//! address with a 400 naming `https://`, and still asks for a token.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_testkit::wait_for;
use common::{BIN, WAIT, tls_flags, tls_pki};

const ADDR: &str = "10.213.0.1";

/// A network namespace with loopback up and `ADDR` on it; deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> Self {
        let name = format!("berth-test-{}", std::process::id());
        let ns = Netns(name.clone());
        ip(&["netns", "add", &name]);
        for args in [
            vec!["-n", &name, "link", "set", "lo", "up"],
            // On the namespace's own loopback device, but not a loopback address: Berth
            // judges the address, so every off-loopback rule applies to it.
            vec!["-n", &name, "addr", "add", "10.213.0.1/32", "dev", "lo"],
        ] {
            ip(&args);
        }
        ns
    }

    /// `PROGRAM ARGS...` inside the namespace.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .env("BERTH_LOG", "warn");
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program, args)
            .output()
            .expect("ip netns exec runs")
    }

    /// `curl` inside the namespace: the HTTP status and body.
    fn curl(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["-s", "--max-time", "5", "-w", "\n%{http_code}"];
        all.extend_from_slice(args);
        let out = self.run("curl", &all);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the `ip` command (iproute2) is installed");
    assert!(
        out.status.success(),
        "ip {}: {} (this test creates a network namespace: run it as root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A role that must refuse to start: its exit status and what it said.
fn refused(ns: &Netns, args: &[&str]) -> String {
    let out = ns.run(BIN, args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "berth {args:?} started: {stderr}");
    stderr
}

fn data(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[tokio::test]
async fn off_loopback_each_role_needs_its_credentials_and_the_api_needs_https() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create();
    let api = format!("{ADDR}:7070");
    let agents = format!("{ADDR}:7071");

    let server = data(dir.path(), "s");
    let why = refused(
        &ns,
        &[
            "server",
            "--listen",
            &api,
            "--agent-listen",
            "127.0.0.1:0",
            "--data-dir",
            &server,
        ],
    );
    assert!(why.contains("--acl"), "{why}");
    let why = refused(
        &ns,
        &[
            "server",
            "--acl",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            &agents,
            "--data-dir",
            &server,
        ],
    );
    assert!(why.contains("--tls-cert-file"), "{why}");
    let why = refused(
        &ns,
        &[
            "registry",
            "--listen",
            &format!("{ADDR}:8848"),
            "--grpc-listen",
            "127.0.0.1:0",
            "--data-dir",
            &data(dir.path(), "r"),
        ],
    );
    assert!(why.contains("--auth-secret-file"), "{why}");
    let why = refused(&ns, &["diag", "--listen", &format!("{ADDR}:7080")]);
    assert!(
        why.contains("--secret-file") && why.contains("--tls-cert-file"),
        "{why}"
    );

    // With ACLs and TLS the server starts there and serves HTTPS only.
    let pki = dir.path().join("pki");
    tls_pki(&pki, &[("server", "s1")]);
    let tls = tls_flags(&pki, "server", "s1");
    let mut args = vec![
        "server",
        "--acl",
        "--listen",
        &api,
        "--agent-listen",
        &agents,
        "--data-dir",
        &server,
    ];
    args.extend(tls.iter().map(String::as_str));
    let mut child = ns
        .command(BIN, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth server starts");
    let ca = pki.join("ca.pem").display().to_string();
    // The certificate names localhost; the connection goes to ADDR.
    let resolve = format!("localhost:7070:{ADDR}");
    let https = |path: &str| {
        ns.curl(&[
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            &format!("https://localhost:7070{path}"),
        ])
    };
    let https = &https;
    let (code, body) = wait_for(
        "the server's HTTPS inside the namespace",
        WAIT,
        || async move {
            let answer = https("/v1/apps");
            (answer.0 != "000").then_some(answer)
        },
    )
    .await;
    assert_eq!(code, "401", "HTTPS without a token: {body}");
    assert!(body.contains("acl_token_missing"), "{body}");

    let (code, body) = ns.curl(&[&format!("http://{api}/v1/apps")]);
    assert_eq!(
        code, "400",
        "plain HTTP from a non-loopback address: {body}"
    );
    assert!(body.contains(&format!("https://{api}")), "{body}");

    let _ = child.kill();
    let _ = child.wait();
}
