//! Mutual TLS on the agent stream, black box: `berth tls` makes the CA and the
//! certificates; a server given them takes only agents whose certificate is signed by
//! that CA and names the node they claim; an off-loopback agent listener without them is
//! refused at start.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use berth_testkit::{BerthProcess, wait_until};
use common::{BIN, WAIT_PLATFORM, berth, loopback_server, node_ids, sim_agent, tls_flags, tls_pki};

#[test]
fn tls_commands_write_a_ca_and_certificates_once() {
    let dir = berth_testkit::temp_dir();
    let pki = dir.path().join("pki");
    tls_pki(&pki, &[("server", "s1"), ("agent", "n1")]);
    for file in ["ca.pem", "server-s1.pem", "agent-n1.pem"] {
        assert!(pki.join(file).is_file(), "{file}");
    }
    for key in ["ca-key.pem", "server-s1-key.pem", "agent-n1-key.pem"] {
        let mode = std::fs::metadata(pki.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let pki_arg = pki.to_str().unwrap();
    let again = berth(&["tls", "ca", "create", "--dir", pki_arg]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("already exists"),
        "{stderr}"
    );
    let again = berth(&[
        "tls", "cert", "create", "--role", "agent", "--name", "n1", "--dir", pki_arg,
    ]);
    assert!(
        !again.status.success(),
        "a second agent-n1 overwrote the first"
    );

    let extra = berth(&[
        "tls",
        "cert",
        "create",
        "--role",
        "registry",
        "--name",
        "r1",
        "--dir",
        pki_arg,
        "--san",
        "registry.example.com",
        "--san",
        "10.1.2.3",
    ]);
    assert!(extra.status.success(), "{extra:?}");

    let empty = dir.path().join("empty");
    let no_ca = berth(&[
        "tls",
        "cert",
        "create",
        "--role",
        "agent",
        "--name",
        "n1",
        "--dir",
        empty.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&no_ca.stderr);
    assert!(
        !no_ca.status.success() && stderr.contains("berth tls ca create --dir"),
        "{stderr}"
    );
    let bad_role = berth(&[
        "tls", "cert", "create", "--role", "wizard", "--name", "n1", "--dir", pki_arg,
    ]);
    let stderr = String::from_utf8_lossy(&bad_role.stderr);
    assert!(
        !bad_role.status.success() && stderr.contains("server, agent, diag, registry"),
        "{stderr}"
    );
}

#[tokio::test]
async fn agents_join_only_as_the_node_their_certificate_names() {
    let dir = berth_testkit::temp_dir();
    let pki = dir.path().join("pki");
    tls_pki(&pki, &[("server", "s1"), ("agent", "n1"), ("diag", "n5")]);
    let other = dir.path().join("other-pki");
    tls_pki(&other, &[("agent", "n4")]);

    let mut args = vec!["--registry-http".to_string(), "off".into()];
    args.extend(tls_flags(&pki, "server", "s1"));
    let server = loopback_server(&dir.path().join("server"), &args).await;
    let api = server.addr("http");
    let grpc = server.addr("grpc");

    let n1 = tls_flags(&pki, "agent", "n1");
    let good = sim_agent(grpc, &dir.path().join("a1"), "n1", &n1).await;
    let liar = sim_agent(grpc, &dir.path().join("a2"), "n2", &n1).await;
    let anonymous = sim_agent(grpc, &dir.path().join("a3"), "n3", &[]).await;
    let stranger = sim_agent(
        grpc,
        &dir.path().join("a4"),
        "n4",
        &tls_flags(&other, "agent", "n4"),
    )
    .await;
    let wrong_role = sim_agent(
        grpc,
        &dir.path().join("a5"),
        "n5",
        &tls_flags(&pki, "diag", "n5"),
    )
    .await;

    wait_until(
        "agent n1 joined with its own certificate",
        WAIT_PLATFORM,
        || async { node_ids(api).await.contains(&"n1".to_string()) },
    )
    .await;
    // Each refused agent tried and was told why: the refusals are proven, not assumed.
    let refused = |agent: &BerthProcess, why: &str| agent.output().contains(why);
    wait_until("the agent claiming n2 with n1's certificate was refused", WAIT_PLATFORM, || async {
        refused(&liar, "PermissionDenied: the Hello claims node \"n2\" but the certificate is node \"n1\"'s")
    })
    .await;
    wait_until(
        "the agent without a certificate was refused",
        WAIT_PLATFORM,
        || async { refused(&anonymous, "cannot reach http://") },
    )
    .await;
    wait_until(
        "the certificate of another CA was refused",
        WAIT_PLATFORM,
        || async { refused(&stranger, "cannot reach https://") },
    )
    .await;
    wait_until(
        "a diag certificate acting as an agent was refused",
        WAIT_PLATFORM,
        || async {
            refused(
                &wrong_role,
                "is a diag certificate (diag.n5.berth), not an agent's",
            )
        },
    )
    .await;
    wait_until(
        "the server logged the refused handshakes",
        WAIT_PLATFORM,
        || async { server.output().contains("agent TLS handshake refused") },
    )
    .await;
    assert_eq!(
        node_ids(api).await,
        vec!["n1".to_string()],
        "only n1 may have joined"
    );
    assert!(good.output().contains("session open"), "{}", good.output());
    drop((liar, anonymous, stranger, wrong_role));
}

#[tokio::test]
async fn an_agent_listener_off_loopback_needs_the_tls_files() {
    let dir = berth_testkit::temp_dir();
    let data = dir.path().join("server");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--agent-listen",
                "0.0.0.0:0",
            ])
            .arg("--data-dir")
            .arg(&data)
            .output(),
    )
    .await
    .expect("the server did not exit")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started without TLS off loopback: {stderr}"
    );
    for flag in [
        "--tls-cert-file",
        "--tls-key-file",
        "--tls-ca-file",
        "off loopback",
    ] {
        assert!(stderr.contains(flag), "{flag} not named: {stderr}");
    }

    // Only some of the three files: the missing ones are named.
    let out = berth(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--agent-listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--tls-cert-file",
        "/nonexistent.pem",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--tls-key-file and --tls-ca-file are missing"),
        "{stderr}"
    );
}
