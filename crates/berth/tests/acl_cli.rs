//! The client side of ACLs with the real binary: where a client command takes its token
//! from (`--token`, `BERTH_TOKEN`, `--token-file`, `BERTH_TOKEN_FILE`), what it prints
//! when the server refuses (401, 403), and `berth acl bootstrap|policy|token` against
//! `berth server --acl` on loopback.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Cli, acl_server, cli, cli_env, token_file};
use serde_json::Value;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn json(out: &Cli) -> Value {
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// The value of `Field  value` in a command's field-per-line output.
fn field(out: &Cli, name: &str) -> String {
    out.stdout
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|rest| rest.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in:\n{}", out.stdout))
}

/// Bad token settings are refused before anything is sent, naming the file and the fix
/// and never echoing a secret. No server is needed: nothing gets that far.
#[tokio::test]
async fn bad_token_settings_are_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = "127.0.0.1:9".parse().unwrap();

    let open = token_file(dir.path(), "open.token", "s3cr3t-open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cli(nobody, &["--token-file", &open, "apps", "list"]).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!("chmod 600 {open}")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);

    let empty = token_file(dir.path(), "empty.token", "");
    let out = cli_env(nobody, &[("BERTH_TOKEN_FILE", &empty)], &["apps", "list"]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains(&empty), "{}", out.stderr);
    assert!(out.stderr.contains("is empty"), "{}", out.stderr);

    let missing = dir.path().join("missing.token");
    let out = cli(
        nobody,
        &["--token-file", missing.to_str().unwrap(), "logs", "demo/x"],
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains(missing.to_str().unwrap()) && out.stderr.contains("--token-file"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn bootstrap_policies_tokens_and_refusals_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let server = acl_server(&data.path().join("server"), &[]).await;
    let api = server.addr("http");

    // No token: the server's 401 message (how to get one) is printed, exit non-zero.
    let out = cli(api, &["apps", "list"]).await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    assert!(out.stderr.contains("berth acl bootstrap"), "{}", out.stderr);
    assert!(out.stderr.contains("no token sent"), "{}", out.stderr);

    // Bootstrap once: the secret is printed this once; a second bootstrap is refused.
    let boot = cli(api, &["acl", "bootstrap"]).await;
    assert!(boot.ok, "{}", boot.stderr);
    let secret = field(&boot, "Secret ID");
    assert_eq!(field(&boot, "Policies"), "management");
    assert!(
        boot.stderr.contains("shown only this once"),
        "{}",
        boot.stderr
    );
    let again = cli(api, &["acl", "bootstrap"]).await;
    assert!(!again.ok);
    assert!(again.stderr.contains("409"), "{}", again.stderr);
    assert!(
        again.stderr.contains("acl-bootstrap-reset"),
        "{}",
        again.stderr
    );

    // The token from each of its four places.
    let file = token_file(data.path(), "mgmt.token", &secret);
    for (env, flags) in [
        (vec![], vec!["--token", secret.as_str()]),
        (vec![("BERTH_TOKEN", secret.as_str())], vec![]),
        (vec![], vec!["--token-file", file.as_str()]),
        (vec![("BERTH_TOKEN_FILE", file.as_str())], vec![]),
    ] {
        let args: Vec<&str> = flags.iter().copied().chain(["apps", "list"]).collect();
        let out = cli_env(api, &env, &args).await;
        assert!(out.ok, "{env:?} {flags:?}: {}", out.stderr);
        assert!(out.stdout.starts_with("APP"), "{}", out.stdout);
    }
    // A wrong one: refused, and the message says which setting it came from.
    let out = cli_env(api, &[("BERTH_TOKEN", "not-a-token")], &["apps", "list"]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    assert!(
        out.stderr.contains("token sent from BERTH_TOKEN"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("not-a-token"), "{}", out.stderr);

    let mgmt = [("BERTH_TOKEN_FILE", file.as_str())];
    // The streaming commands carry it too: refused without it, past the check with it
    // (the app does not exist, so the server answers something else than 401).
    for args in [&["logs", "demo/none"][..], &["inspect", "ps", "demo/none"]] {
        let out = cli(api, args).await;
        assert!(
            !out.ok && out.stderr.contains("(401)"),
            "{args:?}: {}",
            out.stderr
        );
        let out = cli_env(api, &mgmt, args).await;
        assert!(!out.stderr.contains("(401)"), "{args:?}: {}", out.stderr);
    }
    // Policies from a JSON file and a TOML file.
    let ro = write(
        data.path(),
        "ro.json",
        r#"{"description":"read demo","rules":[{"apps":"demo/*","capabilities":["read"]}]}"#,
    );
    let out = cli_env(api, &mgmt, &["acl", "policy", "apply", "ro", &ro]).await;
    assert!(out.ok, "{}", out.stderr);
    let logs = write(
        data.path(),
        "logs.toml",
        "description = \"demo logs\"\n[[rules]]\napps = \"demo/*\"\ncapabilities = [\"read\", \"logs\"]\n",
    );
    let out = cli_env(api, &mgmt, &["acl", "policy", "apply", "logs", &logs]).await;
    assert!(out.ok, "{}", out.stderr);
    let out = cli_env(api, &mgmt, &["acl", "policy", "list"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    for name in ["ro ", "logs "] {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(name)),
            "{}",
            out.stdout
        );
    }
    let shown = json(&cli_env(api, &mgmt, &["acl", "policy", "show", "logs", "-o", "json"]).await);
    assert_eq!(shown["rules"][0]["apps"], "demo/*", "{shown}");
    let out = cli_env(api, &mgmt, &["acl", "policy", "show", "ro"]).await;
    assert!(out.stdout.contains("apps demo/*: read"), "{}", out.stdout);
    // A bad policy: the server's 422 names the field.
    let bad = write(
        data.path(),
        "bad.json",
        r#"{"rules":[{"apps":"demo/*","capabilities":["fly"]}]}"#,
    );
    let out = cli_env(api, &mgmt, &["acl", "policy", "apply", "bad", &bad]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("422"), "{}", out.stderr);
    assert!(out.stderr.contains("fly"), "{}", out.stderr);

    // A read-only token: created, listed without its secret, seen by itself.
    let created = json(
        &cli_env(
            api,
            &mgmt,
            &[
                "acl", "token", "create", "--name", "reader", "--policy", "ro", "-o", "json",
            ],
        )
        .await,
    );
    let ro_secret = created["secret_id"].as_str().unwrap().to_string();
    let accessor = created["accessor_id"].as_str().unwrap().to_string();
    let out = cli_env(api, &mgmt, &["acl", "token", "list"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains(&accessor), "{}", out.stdout);
    assert!(out.stdout.contains("reader"), "{}", out.stdout);
    assert!(!out.stdout.contains(&ro_secret), "{}", out.stdout);
    assert!(!out.stdout.contains(&secret), "{}", out.stdout);
    let out = cli(api, &["--token", &ro_secret, "acl", "token", "self"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(field(&out, "Name"), "reader");
    assert_eq!(field(&out, "Accessor ID"), accessor);
    assert!(!out.stdout.contains(&ro_secret), "{}", out.stdout);
    let shown = json(
        &cli_env(
            api,
            &mgmt,
            &["acl", "token", "show", &accessor, "-o", "json"],
        )
        .await,
    );
    assert_eq!(shown["name"], "reader");

    // It may read, not deploy: the 403 names the capability and the app.
    let out = cli(api, &["--token", &ro_secret, "apps", "list"]).await;
    assert!(out.ok, "{}", out.stderr);
    let spec = write(
        data.path(),
        "x.toml",
        "id = \"demo/x\"\ncmd = \"sleep 1000\"\ninstances = 1\ncpus = 0.1\nmem = 16\n",
    );
    let out = cli(
        api,
        &["--token", &ro_secret, "apps", "deploy", &spec, "--detach"],
    )
    .await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    assert!(
        out.stderr.contains("deploy") && out.stderr.contains("demo/x"),
        "{}",
        out.stderr
    );
    // ... nor manage ACLs.
    let out = cli(api, &["--token", &ro_secret, "acl", "token", "list"]).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("403") && out.stderr.contains("management"),
        "{}",
        out.stderr
    );

    // Revoked: refused from the next request on.
    let out = cli_env(api, &mgmt, &["acl", "token", "revoke", &accessor]).await;
    assert!(out.ok, "{}", out.stderr);
    let out = cli(api, &["--token", &ro_secret, "apps", "list"]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("401"), "{}", out.stderr);

    // Policies go away.
    let out = cli_env(api, &mgmt, &["acl", "policy", "rm", "logs"]).await;
    assert!(out.ok, "{}", out.stderr);
    let out = cli_env(api, &mgmt, &["acl", "policy", "list", "-o", "json"]).await;
    assert!(!out.stdout.contains("\"logs\""), "{}", out.stdout);
}
