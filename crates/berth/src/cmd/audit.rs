//! `berth audit`: the server's audit trail (`GET /v1/audit`, management tokens only):
//! who did or tried what, on which target, from where, and how it ended. Newest first,
//! a table for people, `--json` (or `-o json`) for scripts.

use serde_json::Value;

use super::acl::{segment, time};
use super::apps::{Client, print_json, s, table_text};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only entries from this long ago on (30m, 1h, 7d) or since a Unix time in ms.
    #[arg(long, value_name = "DURATION|MS")]
    since: Option<String>,
    /// Only entries before this long ago (or a Unix time in ms).
    #[arg(long, value_name = "DURATION|MS")]
    until: Option<String>,
    /// Only entries on apps whose id starts with this (`demo/` for every demo app).
    #[arg(long, value_name = "APP")]
    app: Option<String>,
    /// Only entries of the token with this accessor id (`berth acl token list`).
    #[arg(long, value_name = "ACCESSOR")]
    accessor: Option<String>,
    /// Only entries of this action, e.g. app.create, app.scale, diag.grep.
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// At most this many entries (1 to 1000) [default: 100].
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Only entries older than this id: the next page, as the previous one said.
    #[arg(long, value_name = "ID")]
    before: Option<u64>,
    /// JSON instead of a table (as `-o json`).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    let v = client.get(&path(&args)).await?;
    if args.json || global.output == OutputFormat::Json {
        print_json(&v);
        return Ok(());
    }
    print!("{}", entries_table(&v));
    if let Some(next) = v["next"].as_u64() {
        eprintln!("(more entries: add --before {next})");
    }
    Ok(())
}

/// `/v1/audit` with the filters given, each value one encoded query component.
fn path(args: &Args) -> String {
    let limit = args.limit.map(|n| n.to_string());
    let before = args.before.map(|n| n.to_string());
    let pairs = [
        ("since", args.since.as_deref()),
        ("until", args.until.as_deref()),
        ("app", args.app.as_deref()),
        ("accessor", args.accessor.as_deref()),
        ("action", args.action.as_deref()),
        ("limit", limit.as_deref()),
        ("before", before.as_deref()),
    ];
    let query: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", segment(v))))
        .collect();
    if query.is_empty() {
        "/v1/audit".into()
    } else {
        format!("/v1/audit?{}", query.join("&"))
    }
}

fn entries_table(v: &Value) -> String {
    let rows = v["entries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let who = match (e["token_name"].as_str(), e["accessor_id"].as_str()) {
                (Some(name), Some(accessor)) => format!("{name} ({accessor})"),
                _ => "(no valid token)".into(),
            };
            let status = e["status"].as_u64().map_or("?".into(), |s| s.to_string());
            let params = e["params"]
                .as_object()
                .map(|p| {
                    p.iter()
                        .map(|(k, v)| format!("{k}={}", s(v)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            vec![
                time(&e["time_ms"]),
                who,
                s(&e["client"]),
                s(&e["action"]),
                s(&e["target"]),
                format!("{} {status}", s(&e["decision"])),
                params,
            ]
        })
        .collect();
    table_text(
        &[
            "TIME", "WHO", "CLIENT", "ACTION", "TARGET", "OUTCOME", "PARAMS",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_become_one_encoded_query() {
        let args = Args {
            since: Some("1h".into()),
            until: None,
            app: Some("demo/web".into()),
            accessor: None,
            action: Some("app.scale".into()),
            limit: Some(5),
            before: None,
            json: false,
        };
        assert_eq!(
            path(&args),
            "/v1/audit?since=1h&app=demo%2Fweb&action=app.scale&limit=5"
        );
    }

    #[test]
    fn entries_show_who_what_and_how_it_ended() {
        let v = json!({"entries": [
            {"id": 2, "time_ms": 0u64, "accessor_id": "acc-1", "token_name": "ci",
             "client": "127.0.0.1:5000", "action": "app.scale", "target": "app:demo/web",
             "decision": "allowed", "status": 200, "params": {"force": "true"}},
            {"id": 1, "time_ms": 0u64, "accessor_id": null, "token_name": null,
             "client": "127.0.0.1:5001", "action": "app.delete", "target": "app:demo/web",
             "decision": "denied", "status": 401, "params": {}},
        ], "next": null});
        let text = entries_table(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TIME"), "{text}");
        assert!(
            lines[1].contains("ci (acc-1)")
                && lines[1].contains("app.scale")
                && lines[1].contains("allowed 200")
                && lines[1].contains("force=true"),
            "{text}"
        );
        assert!(
            lines[2].contains("(no valid token)") && lines[2].contains("denied 401"),
            "{text}"
        );
    }
}
