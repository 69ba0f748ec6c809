//! `berth config get|put|rm|history|rollback|watch`: the registry's config center through
//! its Nacos HTTP APIs, as any Nacos client sees it: the v2 open API for reads and
//! writes, the v1 long-polling listener for `watch`.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use super::{GlobalArgs, OutputFormat};

/// How long `watch` asks the registry to hold each long-poll.
const POLL_MS: u64 = 30_000;
/// Pause before a `watch` tries again after a failed poll.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The registry's HTTP listener: `host:port`, or an `http://` or `https://` URL
    /// (`--ca-cert` names the CA of an HTTPS one). The token, when its auth is on, comes
    /// from BERTH_REGISTRY_TOKEN.
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "BERTH_REGISTRY_HTTP",
        default_value = "127.0.0.1:8848"
    )]
    registry_http: String,
    /// Group of the config.
    #[arg(long, global = true, default_value = "DEFAULT_GROUP")]
    group: String,
    /// Namespace of the config [default: public].
    #[arg(long, global = true, default_value = "")]
    namespace: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Print a config's content.
    Get { data_id: String },
    /// Publish a config from FILE, or from stdin when FILE is `-` or left out.
    Put {
        data_id: String,
        file: Option<PathBuf>,
        /// text, json, yaml, properties, xml, html or toml [default: from DATA_ID's
        /// extension, else text].
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Publish only while the stored config still has this md5 (compare-and-set).
        #[arg(long, value_name = "MD5")]
        cas_md5: Option<String>,
        /// A description kept with the config.
        #[arg(long)]
        desc: Option<String>,
    },
    /// Remove a config.
    Rm { data_id: String },
    /// A config's changes, newest first: id, operation, time, author, source, md5.
    History {
        data_id: String,
        /// How many changes to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Put a config back as history record ID left it (a new change of its own).
    Rollback { data_id: String, id: u64 },
    /// Print the config's content each time it changes (a line when it is deleted), until
    /// interrupted.
    Watch { data_id: String },
}

/// The registry's config APIs as this command uses them.
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    group: String,
    namespace: String,
}

impl Client {
    fn new(args: &Args, global: &GlobalArgs) -> anyhow::Result<Self> {
        let base = args.registry_http.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        Ok(Self {
            http: super::ca_cert::http_client(global.ca_cert.as_deref())?,
            base,
            token: std::env::var("BERTH_REGISTRY_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            group: args.group.clone(),
            namespace: args.namespace.clone(),
        })
    }

    /// A request naming the config, carrying the token (as a header, out of URLs).
    fn request(&self, method: Method, path: &str, data_id: &str, ns_param: &str) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(&[
                ("dataId", data_id),
                ("group", &self.group),
                (ns_param, &self.namespace),
            ]);
        match self
            .token
            .as_deref()
            .and_then(|t| reqwest::header::HeaderValue::from_str(t).ok())
        {
            Some(mut value) => {
                value.set_sensitive(true);
                request.header("accessToken", value)
            }
            None => request,
        }
    }

    fn v2(&self, method: Method, path: &str, data_id: &str) -> RequestBuilder {
        self.request(method, path, data_id, "namespaceId")
            .timeout(Duration::from_secs(30))
    }

    /// Sends; see [`Client::check`].
    async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the registry at {}; start it with `berth registry` or pass --registry-http / BERTH_REGISTRY_HTTP",
                self.base
            )
        })?;
        self.check(response).await
    }

    /// A v2 call's `data`.
    async fn data(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let text = self.send(request).await?.text().await?;
        let answer: Value = serde_json::from_str(&text)
            .with_context(|| format!("the registry's answer is not JSON: {}", text.trim()))?;
        Ok(answer["data"].clone())
    }

    /// The content and md5 through v1 (the only API that gives the md5 with it).
    async fn current(&self, data_id: &str) -> anyhow::Result<Option<(String, String)>> {
        let request = self
            .request(Method::GET, "/nacos/v1/cs/configs", data_id, "tenant")
            .timeout(Duration::from_secs(30));
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the registry at {}; pass --registry-http / BERTH_REGISTRY_HTTP",
                self.base
            )
        })?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.check(response).await?;
        let md5 = response
            .headers()
            .get("content-md5")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Some((response.text().await?, md5)))
    }

    /// A refusal becomes an error carrying the registry's own message.
    async fn check(&self, response: Response) -> anyhow::Result<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        bail!("the registry answered {status}: {}", server_message(&text))
    }

    /// One long-poll: true when the registry says the config changed.
    async fn poll(&self, data_id: &str, md5: &str) -> anyhow::Result<bool> {
        let listening = format!(
            "{data_id}\u{2}{}\u{2}{md5}\u{2}{}\u{1}",
            self.group, self.namespace
        );
        let request = self
            .request(
                Method::POST,
                "/nacos/v1/cs/configs/listener",
                data_id,
                "tenant",
            )
            .header("Long-Pulling-Timeout", POLL_MS.to_string())
            .form(&[("Listening-Configs", listening)])
            .timeout(Duration::from_millis(POLL_MS + 10_000));
        let body = self.send(request).await?.text().await?;
        Ok(!body.trim().is_empty())
    }
}

/// The message inside an error answer: v2's `data`, or v1's text after `caused: `.
fn server_message(text: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(text)
        && let Some(data) = v["data"].as_str()
    {
        return data.to_string();
    }
    let text = text.trim();
    text.strip_prefix("caused: ").unwrap_or(text).to_string()
}

/// The config type a data id's extension suggests (`app.yaml` is yaml).
fn type_of(data_id: &str) -> Option<&'static str> {
    let ext = data_id.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "yaml" | "yml" => "yaml",
        "json" => "json",
        "properties" => "properties",
        "xml" => "xml",
        "html" | "htm" => "html",
        "toml" => "toml",
        "txt" | "text" => "text",
        _ => return None,
    })
}

fn read_content(file: Option<&PathBuf>) -> anyhow::Result<String> {
    match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        }
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the content from stdin")?;
            Ok(text)
        }
    }
}

/// Prints content as stored; a terminal also gets a final newline.
fn print_content(content: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(content.as_bytes())?;
    if !content.ends_with('\n') && out.is_terminal() {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = Client::new(&args, global)?;
    let output = global.output;
    match args.action {
        Action::Get { data_id } => get(&client, &data_id, output).await,
        Action::Put {
            data_id,
            file,
            kind,
            cas_md5,
            desc,
        } => {
            let content = read_content(file.as_ref())?;
            let kind = kind.or_else(|| type_of(&data_id).map(str::to_string));
            put(&client, &data_id, &content, kind, cas_md5, desc).await
        }
        Action::Rm { data_id } => {
            let request = client.v2(Method::DELETE, "/nacos/v2/cs/config", &data_id);
            client.data(request).await?;
            println!("removed {data_id}");
            Ok(())
        }
        Action::History { data_id, limit } => history(&client, &data_id, limit, output).await,
        Action::Rollback { data_id, id } => {
            let request = client
                .v2(Method::POST, "/nacos/v2/cs/history/rollback", &data_id)
                .query(&[("nid", id.to_string()), ("srcUser", author())]);
            client.data(request).await?;
            println!("{data_id} rolled back to history record {id}");
            Ok(())
        }
        Action::Watch { data_id } => watch(&client, &data_id, output).await,
    }
}

async fn get(client: &Client, data_id: &str, output: OutputFormat) -> anyhow::Result<()> {
    let request = client.v2(Method::GET, "/nacos/v2/cs/config", data_id);
    let data = client.data(request).await?;
    let content = data.as_str().unwrap_or_default();
    if output == OutputFormat::Json {
        println!("{}", change_json(client, data_id, Some(content)));
        return Ok(());
    }
    print_content(content)
}

/// Who publishes: the local user, recorded as the change's author.
fn author() -> String {
    std::env::var("USER").unwrap_or_default()
}

async fn put(
    client: &Client,
    data_id: &str,
    content: &str,
    kind: Option<String>,
    cas_md5: Option<String>,
    desc: Option<String>,
) -> anyhow::Result<()> {
    let mut form = vec![("content", content.to_string()), ("srcUser", author())];
    form.extend(kind.map(|k| ("type", k)));
    form.extend(desc.map(|d| ("desc", d)));
    let mut request = client
        .v2(Method::POST, "/nacos/v2/cs/config", data_id)
        .form(&form);
    if let Some(md5) = cas_md5 {
        request = request.header("casMd5", md5);
    }
    client.data(request).await?;
    println!("published {data_id} (group {})", client.group);
    Ok(())
}

async fn history(
    client: &Client,
    data_id: &str,
    limit: u32,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let request = client
        .v2(Method::GET, "/nacos/v2/cs/history/list", data_id)
        .query(&[("pageNo", 1), ("pageSize", limit.clamp(1, 500))]);
    let page = client.data(request).await?;
    if output == OutputFormat::Json {
        println!("{page}");
        return Ok(());
    }
    let text = |v: &Value| {
        v.as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("-")
            .to_string()
    };
    println!(
        "{:<8} {:<3} {:<25} {:<16} {:<16} MD5",
        "ID", "OP", "WHEN", "WHO", "FROM"
    );
    for item in page["pageItems"].as_array().into_iter().flatten() {
        println!(
            "{:<8} {:<3} {:<25} {:<16} {:<16} {}",
            text(&item["id"]),
            text(&item["opType"]),
            text(&item["createdTime"]),
            text(&item["srcUser"]),
            text(&item["srcIp"]),
            text(&item["md5"]),
        );
    }
    Ok(())
}

fn change_json(client: &Client, data_id: &str, content: Option<&str>) -> Value {
    json!({
        "dataId": data_id,
        "group": client.group,
        "namespace": client.namespace,
        "content": content,
    })
}

/// Long-polls until interrupted, printing each new content. The md5 the poll names is
/// the one last read, so a change between two polls is never missed.
async fn watch(client: &Client, data_id: &str, output: OutputFormat) -> anyhow::Result<()> {
    let mut md5 = client
        .current(data_id)
        .await?
        .map(|(_, md5)| md5)
        .unwrap_or_default();
    eprintln!("watching {data_id} (group {}); Ctrl-C stops", client.group);
    loop {
        match client.poll(data_id, &md5).await {
            Ok(false) => continue,
            Ok(true) => {}
            Err(err) => {
                eprintln!("error: {err:#}; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        let current = match client.current(data_id).await {
            Ok(current) => current,
            Err(err) => {
                eprintln!("error: {err:#}; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let new_md5 = current.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
        if new_md5 == md5 {
            continue;
        }
        md5 = new_md5;
        let content = current.as_ref().map(|(c, _)| c.as_str());
        if output == OutputFormat::Json {
            println!("{}", change_json(client, data_id, content));
        } else if let Some(content) = content {
            // Each content ends a line, so one change never runs into the next.
            let newline = if content.ends_with('\n') { "" } else { "\n" };
            print!("{content}{newline}");
        } else {
            println!("--- {data_id} was deleted");
        }
        std::io::stdout().flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_come_out_of_either_api() {
        assert_eq!(
            server_message(
                r#"{"code":20004,"message":"resource not found","data":"config data not exist"}"#
            ),
            "config data not exist"
        );
        assert_eq!(
            server_message("caused: parameter 'dataId' is missing\n"),
            "parameter 'dataId' is missing"
        );
    }

    #[test]
    fn types_follow_the_extension() {
        assert_eq!(type_of("app.yml"), Some("yaml"));
        assert_eq!(type_of("db.properties"), Some("properties"));
        assert_eq!(type_of("plain"), None);
    }
}
