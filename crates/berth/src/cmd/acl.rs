//! `berth acl ...`: the server's ACL endpoints (/v1/acl/*) from the command line:
//! bootstrap the first management token, apply and read policies, create, read and
//! revoke tokens. Tables for people, `-o json` for scripts. A secret is printed once,
//! when it is created (bootstrap, token create), and never by list or show.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::apps::{Client, print_json, s};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// Create the first management token of a server started with --acl (once; its
    /// secret is printed only now).
    Bootstrap,
    /// Policies: rules of capabilities on app and node patterns.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Tokens: a secret with a name, policies and an optional expiry.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Create or replace policy NAME from a JSON (.json) or TOML (.toml) file, e.g.
    /// `rules = [{ apps = "demo/*", capabilities = ["read", "logs"] }]`.
    Apply { name: String, file: PathBuf },
    /// Every policy.
    List,
    /// One policy with its rules.
    Show { name: String },
    /// Delete a policy (tokens naming it lose what it granted).
    Rm { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed only now.
    Create {
        /// A name for people (shown in lists, in 403 messages and in the audit trail).
        #[arg(long)]
        name: String,
        /// A policy the token gets (repeat for several).
        #[arg(long = "policy", value_name = "POLICY", required = true)]
        policies: Vec<String>,
        /// Lifetime, e.g. 24h or 30m; without it the token lasts until revoked.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// Every token (accessors and names, never secrets).
    List,
    /// One token by its accessor id.
    Show { accessor: String },
    /// Revoke a token by its accessor id: refused from its next request on.
    Revoke { accessor: String },
    /// The token this command sends.
    #[command(name = "self")]
    Whoami,
}

pub async fn run(cmd: AclCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    let json_out = global.output == OutputFormat::Json;
    match cmd {
        AclCommand::Bootstrap => {
            let token = client
                .call(reqwest::Method::POST, "/v1/acl/bootstrap", None)
                .await?;
            if json_out {
                print_json(&token);
            } else {
                print!("{}", token_text(&token, true));
                eprintln!("{}", SECRET_NOTE);
            }
        }
        AclCommand::Policy(cmd) => policy(&client, cmd, json_out).await?,
        AclCommand::Token(cmd) => token(&client, cmd, json_out).await?,
    }
    Ok(())
}

/// Said on stderr under a new secret, so that `berth acl bootstrap > file` keeps it clean.
const SECRET_NOTE: &str = "\nThe secret id is shown only this once: keep it (a file only you can read, `chmod 600`) \
and use it with --token-file FILE, BERTH_TOKEN_FILE or BERTH_TOKEN.";

async fn policy(client: &Client, cmd: PolicyCommand, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Apply { name, file } => {
            let (content_type, body) = policy_body(&file)?;
            let v = client
                .call(
                    reqwest::Method::PUT,
                    &format!("/v1/acl/policy/{}", segment(&name)),
                    Some((content_type, body)),
                )
                .await?;
            if json_out {
                print_json(&v);
            } else {
                println!("policy {name} applied");
                print!("{}", policy_text(&v));
            }
        }
        PolicyCommand::List => {
            let v = client.get("/v1/acl/policies").await?;
            if json_out {
                print_json(&v);
            } else {
                print!("{}", policies_table(&v));
            }
        }
        PolicyCommand::Show { name } => {
            let v = client
                .get(&format!("/v1/acl/policy/{}", segment(&name)))
                .await?;
            if json_out {
                print_json(&v);
            } else {
                print!("{}", policy_text(&v));
            }
        }
        PolicyCommand::Rm { name } => {
            let v = client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/acl/policy/{}", segment(&name)),
                    None,
                )
                .await?;
            if json_out {
                print_json(&v);
            } else {
                println!("policy {name} deleted");
            }
        }
    }
    Ok(())
}

async fn token(client: &Client, cmd: TokenCommand, json_out: bool) -> anyhow::Result<()> {
    let v = match cmd {
        TokenCommand::Create {
            name,
            policies,
            ttl,
        } => {
            let body = create_body(&name, &policies, ttl.as_deref());
            let v = client
                .call(
                    reqwest::Method::POST,
                    "/v1/acl/token",
                    Some(("application/json", body.to_string())),
                )
                .await?;
            if !json_out {
                print!("{}", token_text(&v, true));
                eprintln!("{}", SECRET_NOTE);
                return Ok(());
            }
            v
        }
        TokenCommand::List => {
            let v = client.get("/v1/acl/tokens").await?;
            if !json_out {
                print!("{}", tokens_table(&v));
                return Ok(());
            }
            v
        }
        TokenCommand::Show { accessor } => {
            client
                .get(&format!("/v1/acl/token/{}", segment(&accessor)))
                .await?
        }
        TokenCommand::Whoami => client.get("/v1/acl/token/self").await?,
        TokenCommand::Revoke { accessor } => {
            let v = client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/acl/token/{}", segment(&accessor)),
                    None,
                )
                .await?;
            if !json_out {
                println!("token {accessor} revoked");
                return Ok(());
            }
            v
        }
    };
    if json_out {
        print_json(&v);
    } else {
        print!("{}", token_text(&v, false));
    }
    Ok(())
}

/// The body and content type of `policy apply`: the file as it is, typed by its
/// extension (the server parses and validates both, naming a bad field).
fn policy_body(file: &Path) -> anyhow::Result<(&'static str, String)> {
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        Some("toml") => "application/toml",
        _ => bail!(
            "cannot tell the format of the policy file {}: name it NAME.json or NAME.toml",
            file.display()
        ),
    };
    let body = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the policy file {}", file.display()))?;
    Ok((content_type, body))
}

fn create_body(name: &str, policies: &[String], ttl: Option<&str>) -> Value {
    let mut body = json!({ "name": name, "policies": policies });
    if let Some(ttl) = ttl {
        body["ttl"] = json!(ttl);
    }
    body
}

/// A name or accessor as one URL path segment (a `/` or `?` in it cannot reach
/// another endpoint).
pub(super) fn segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The items of a list answer: `{"KEY": [...]}` as the server's other lists, or a bare
/// array.
fn items<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .or_else(|| v.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn list(v: &Value) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(s).collect::<Vec<_>>().join(", "),
        _ => "-".into(),
    }
}

/// Milliseconds since the epoch as an RFC 3339 time (UTC, seconds), "-" when absent.
pub(super) fn time(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        None => "-".into(),
    }
}

fn rows_text(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// One token, field per line; `with_secret` only right after it was created.
fn token_text(t: &Value, with_secret: bool) -> String {
    let mut rows = vec![("Accessor ID", s(&t["accessor_id"]))];
    if with_secret {
        rows.push(("Secret ID", s(&t["secret_id"])));
    }
    rows.push(("Name", s(&t["name"])));
    rows.push(("Policies", list(&t["policies"])));
    rows.push(("Created", time(&t["create_time_ms"])));
    rows.push(("Expires", time(&t["expiration_time_ms"])));
    rows_text(&rows)
}

fn tokens_table(v: &Value) -> String {
    let rows = items(v, "tokens")
        .into_iter()
        .map(|t| {
            vec![
                s(&t["accessor_id"]),
                s(&t["name"]),
                list(&t["policies"]),
                time(&t["create_time_ms"]),
                time(&t["expiration_time_ms"]),
            ]
        })
        .collect();
    super::apps::table_text(
        &["ACCESSOR", "NAME", "POLICIES", "CREATED", "EXPIRES"],
        rows,
    )
}

fn policies_table(v: &Value) -> String {
    let rows = items(v, "policies")
        .into_iter()
        .map(|p| {
            let rules = p["rules"].as_array().map_or(0, Vec::len);
            vec![
                s(&p["name"]),
                rules.to_string(),
                p["description"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    super::apps::table_text(&["NAME", "RULES", "DESCRIPTION"], rows)
}

/// One policy: its name, description, then one rule a line ("apps demo/*: read, logs").
fn policy_text(p: &Value) -> String {
    let mut out = rows_text(&[
        ("Name", s(&p["name"])),
        (
            "Description",
            p["description"].as_str().unwrap_or("").to_string(),
        ),
    ]);
    out.push_str("Rules:\n");
    let rules = p["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        out.push_str("  (none)\n");
    }
    for rule in rules {
        let target = ["apps", "nodes"]
            .iter()
            .filter_map(|k| rule[*k].as_str().map(|pattern| format!("{k} {pattern}")))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!("  {target}: {}\n", list(&rule["capabilities"])));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_files_are_typed_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("ro.toml");
        std::fs::write(&toml, "rules = []\n").unwrap();
        assert_eq!(
            policy_body(&toml).unwrap(),
            ("application/toml", "rules = []\n".to_string())
        );
        let json = dir.path().join("ro.json");
        std::fs::write(&json, "{}").unwrap();
        assert_eq!(policy_body(&json).unwrap().0, "application/json");

        let txt = dir.path().join("ro.txt");
        std::fs::write(&txt, "{}").unwrap();
        let err = policy_body(&txt).unwrap_err().to_string();
        assert!(err.contains("ro.txt") && err.contains("NAME.toml"), "{err}");
        let err = format!(
            "{:#}",
            policy_body(&dir.path().join("gone.json")).unwrap_err()
        );
        assert!(err.contains("gone.json"), "{err}");
    }

    #[test]
    fn token_create_sends_name_policies_and_ttl_only_when_given() {
        let policies = vec!["ro".to_string(), "logs".to_string()];
        assert_eq!(
            create_body("ci", &policies, None),
            json!({"name": "ci", "policies": ["ro", "logs"]})
        );
        assert_eq!(
            create_body("ci", &policies, Some("24h"))["ttl"],
            json!("24h")
        );
    }

    #[test]
    fn names_stay_one_path_segment() {
        assert_eq!(segment("ro-apps_1.x"), "ro-apps_1.x");
        assert_eq!(segment("../token/self"), "..%2Ftoken%2Fself");
        assert_eq!(segment("a b?c"), "a%20b%3Fc");
    }

    #[test]
    fn a_new_token_shows_its_secret_and_a_listed_one_never() {
        let t = json!({
            "accessor_id": "acc-1", "secret_id": "sec-1", "name": "bootstrap",
            "policies": ["management"], "create_time_ms": 0u64,
        });
        let created = token_text(&t, true);
        assert!(created.contains("Secret ID    sec-1"), "{created}");
        assert!(created.contains("Accessor ID  acc-1"), "{created}");
        assert!(created.contains("Policies     management"), "{created}");
        assert!(
            created.contains("Created      1970-01-01T00:00:00Z"),
            "{created}"
        );
        assert!(created.contains("Expires      -"), "{created}");
        assert!(!token_text(&t, false).contains("sec-1"));

        // A list never shows a secret, even if an answer carried one.
        let table = tokens_table(&json!({"tokens": [t]}));
        assert!(!table.contains("sec-1"), "{table}");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "ACCESSOR  NAME       POLICIES    CREATED               EXPIRES"
        );
        assert_eq!(
            lines[1],
            "acc-1     bootstrap  management  1970-01-01T00:00:00Z  -"
        );
    }

    #[test]
    fn lists_read_wrapped_or_bare_arrays() {
        let p = json!({"name": "ro", "description": "read demo", "rules": [
            {"apps": "demo/*", "capabilities": ["read", "logs"]},
            {"nodes": "*", "capabilities": ["node-write"]},
        ]});
        for answer in [json!({"policies": [p.clone()]}), json!([p.clone()])] {
            let table = policies_table(&answer);
            assert_eq!(
                table.lines().collect::<Vec<_>>(),
                ["NAME  RULES  DESCRIPTION", "ro    2      read demo"]
            );
        }
        assert_eq!(
            policy_text(&p),
            "Name         ro\nDescription  read demo\nRules:\n  apps demo/*: read, logs\n  nodes *: node-write\n"
        );
    }
}
