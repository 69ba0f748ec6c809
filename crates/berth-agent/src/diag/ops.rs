//! The operations an agent runs for the diagnostics gateway, over one instance or every
//! instance of an app on this node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_core::InstanceId;
use berth_proto::diag::v1 as pb;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::procs;
use crate::driver::{log_tail, numbered};
use crate::record::RecordStore;
use crate::supervisor::Supervisor;

/// Lines per chunk: big enough to amortise the frame, small enough to stream.
const BATCH: usize = 256;
/// Matches a grep returns unless it asks for fewer.
const DEFAULT_MATCHES: u32 = 1000;
const MAX_MATCHES: u32 = 100_000;
const MAX_PATTERN: usize = 1000;
const MAX_TAIL: u32 = 10_000;
/// Rotated copies a grep reads besides the live file.
const MAX_ROTATED: usize = 9;
/// How often a followed log is looked at.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The operation ended because its user went away.
#[derive(Debug)]
pub struct Cancelled;

/// Where an operation's results go: credit-limited chunks on the agent's stream.
pub struct Sink {
    pub tx: mpsc::Sender<pb::AgentFrame>,
    pub request_id: u64,
    pub credit: Arc<Semaphore>,
    pub cancel: CancellationToken,
}

impl Sink {
    async fn lines(&self, instance: &str, lines: Vec<String>) -> Result<(), Cancelled> {
        if lines.is_empty() {
            return Ok(());
        }
        tokio::select! {
            permit = self.credit.acquire() => match permit {
                Ok(permit) => permit.forget(),
                Err(_) => return Err(Cancelled),
            },
            () = self.cancel.cancelled() => return Err(Cancelled),
        }
        self.send(pb::Chunk {
            request_id: self.request_id,
            instance_id: instance.to_string(),
            lines,
            done: false,
            error: String::new(),
        })
        .await
    }

    /// The last chunk; needs no credit (the gateway keeps a slot for it).
    pub async fn done(&self, error: String) {
        let _ = self
            .send(pb::Chunk {
                request_id: self.request_id,
                done: true,
                error,
                ..Default::default()
            })
            .await;
    }

    async fn send(&self, chunk: pb::Chunk) -> Result<(), Cancelled> {
        let frame = pb::AgentFrame {
            kind: Some(pb::agent_frame::Kind::Chunk(chunk)),
        };
        self.tx.send(frame).await.map_err(|_| Cancelled)
    }
}

/// Collects lines and sends them a batch at a time.
struct Batch<'a> {
    sink: &'a Sink,
    instance: String,
    lines: Vec<String>,
}

impl<'a> Batch<'a> {
    fn new(sink: &'a Sink, instance: &str) -> Self {
        Self {
            sink,
            instance: instance.to_string(),
            lines: Vec::new(),
        }
    }

    async fn push(&mut self, line: String) -> Result<(), Cancelled> {
        self.lines.push(line);
        if self.lines.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Cancelled> {
        let lines = std::mem::take(&mut self.lines);
        self.sink.lines(&self.instance, lines).await
    }
}

/// What an operation may look at.
pub struct Ctx {
    pub supervisor: Supervisor,
    pub store: RecordStore,
}

/// One target instance: id and its root process (0 when none runs).
struct Target {
    id: InstanceId,
    pid: u32,
}

fn targets(ctx: &Ctx, op: &pb::Operation) -> Result<Vec<Target>, String> {
    let statuses = ctx.supervisor.statuses();
    let mut found: Vec<Target> = statuses
        .iter()
        .filter(|s| {
            if op.instance_id.is_empty() {
                s.app_id == op.app_id
            } else {
                s.instance_id == op.instance_id
            }
        })
        .filter_map(|s| {
            Some(Target {
                id: InstanceId::try_from(s.instance_id.clone()).ok()?,
                pid: s.pid,
            })
        })
        .collect();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    if found.is_empty() {
        return Err(if op.instance_id.is_empty() {
            format!("app {:?} has no instance on this node", op.app_id)
        } else {
            format!("instance {:?} is not on this node", op.instance_id)
        });
    }
    Ok(found)
}

/// Runs `op` to its end (or its cancellation) and sends the final chunk.
pub async fn run(ctx: &Ctx, op: pb::Operation, sink: &Sink) {
    let result = match targets(ctx, &op) {
        Err(why) => Err(why),
        Ok(targets) => match &op.op {
            Some(pb::operation::Op::Grep(grep)) => run_grep(ctx, &targets, grep, sink).await,
            Some(pb::operation::Op::Tail(tail)) => run_tail(ctx, &targets, tail, sink).await,
            Some(pb::operation::Op::Processes(_)) => run_processes(ctx, &targets, sink).await,
            Some(pb::operation::Op::Ports(_)) => run_ports(ctx, &targets, sink).await,
            None => Err("the operation names nothing to do".to_string()),
        },
    };
    match result {
        Ok(()) => sink.done(String::new()).await,
        Err(why) if why.is_empty() => {}
        Err(why) => sink.done(why).await,
    }
}

/// A cancelled operation sends nothing more: its user is gone.
fn cancelled(_: Cancelled) -> String {
    String::new()
}

fn streams(name: &str) -> Result<Vec<&'static str>, String> {
    match name {
        "" => Ok(vec!["stdout", "stderr"]),
        "stdout" => Ok(vec!["stdout"]),
        "stderr" => Ok(vec!["stderr"]),
        other => Err(format!(
            "stream {other:?} does not exist: use stdout, stderr or leave it empty for both"
        )),
    }
}

fn log_path(ctx: &Ctx, id: &InstanceId, stream: &str) -> PathBuf {
    let logs = ctx.store.logs(id);
    if stream == "stderr" {
        logs.stderr
    } else {
        logs.stdout
    }
}

/// The live file and its rotated copies, oldest first.
fn with_rotated(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=MAX_ROTATED)
        .rev()
        .map(|n| numbered(path, n))
        .filter(|p| p.exists())
        .collect();
    files.push(path.to_path_buf());
    files
}

async fn run_grep(
    ctx: &Ctx,
    targets: &[Target],
    grep: &pb::Grep,
    sink: &Sink,
) -> Result<(), String> {
    if grep.pattern.is_empty() || grep.pattern.len() > MAX_PATTERN {
        return Err(format!(
            "grep.pattern must have 1 to {MAX_PATTERN} characters"
        ));
    }
    let regex = regex::RegexBuilder::new(&grep.pattern)
        .case_insensitive(grep.ignore_case)
        .size_limit(1 << 20)
        .build()
        .map_err(|err| format!("grep.pattern is not a valid regular expression: {err}"))?;
    let streams = streams(&grep.stream)?;
    let limit = match grep.max_matches {
        0 => DEFAULT_MATCHES,
        n => n.min(MAX_MATCHES),
    };
    let mut matched = 0u32;
    for target in targets {
        let mut batch = Batch::new(sink, target.id.as_str());
        for stream in &streams {
            for file in with_rotated(&log_path(ctx, &target.id, stream)) {
                let Ok(handle) = tokio::fs::File::open(&file).await else {
                    continue;
                };
                let mut lines = BufReader::new(handle).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if !regex.is_match(&line) {
                        continue;
                    }
                    let line = if streams.len() > 1 {
                        format!("{stream}: {line}")
                    } else {
                        line
                    };
                    batch.push(line).await.map_err(cancelled)?;
                    matched += 1;
                    if matched >= limit {
                        batch
                            .push(format!(
                                "(stopped at {limit} matches: raise max_matches for more)"
                            ))
                            .await
                            .map_err(cancelled)?;
                        batch.flush().await.map_err(cancelled)?;
                        return Ok(());
                    }
                }
            }
        }
        batch.flush().await.map_err(cancelled)?;
    }
    Ok(())
}

async fn run_tail(
    ctx: &Ctx,
    targets: &[Target],
    tail: &pb::Tail,
    sink: &Sink,
) -> Result<(), String> {
    let stream = match tail.stream.as_str() {
        "" | "stdout" => "stdout",
        "stderr" => "stderr",
        other => {
            return Err(format!(
                "tail.stream {other:?} does not exist: use stdout or stderr"
            ));
        }
    };
    let lines = match tail.lines {
        0 => 100,
        n => n.min(MAX_TAIL),
    } as usize;
    if tail.follow && targets.len() != 1 {
        return Err("tail.follow needs one instance: name it with instance_id".to_string());
    }
    for target in targets {
        let path = log_path(ctx, &target.id, stream);
        let text = log_tail(&path, lines, 4 << 20);
        let mut batch = Batch::new(sink, target.id.as_str());
        for line in text.lines() {
            batch.push(line.to_string()).await.map_err(cancelled)?;
        }
        batch.flush().await.map_err(cancelled)?;
        if tail.follow {
            follow(&path, target.id.as_str(), sink)
                .await
                .map_err(cancelled)?;
        }
    }
    Ok(())
}

/// Sends what the program appends until the user goes away. A file that shrank was
/// rotated (copy-then-truncate): reading resumes at its start.
async fn follow(path: &Path, instance: &str, sink: &Sink) -> Result<(), Cancelled> {
    let mut offset = tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let mut partial = String::new();
    loop {
        tokio::select! {
            () = sink.cancel.cancelled() => return Err(Cancelled),
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        let len = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if len < offset {
            offset = 0;
            partial.clear();
        }
        if len == offset {
            continue;
        }
        let Ok(mut file) = tokio::fs::File::open(path).await else {
            continue;
        };
        if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
            continue;
        }
        let mut bytes = Vec::new();
        let read = (&mut file).take(len - offset).read_to_end(&mut bytes).await;
        let Ok(read) = read else { continue };
        offset += read as u64;
        partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines: Vec<String> = partial.split('\n').map(str::to_string).collect();
        partial = lines.pop().unwrap_or_default();
        let mut batch = Batch::new(sink, instance);
        for line in lines {
            batch.push(line).await?;
        }
        batch.flush().await?;
    }
}

async fn run_processes(ctx: &Ctx, targets: &[Target], sink: &Sink) -> Result<(), String> {
    for target in targets {
        let root = root_pid(ctx, target).await;
        let procs = match root {
            0 => Vec::new(),
            pid => tokio::task::spawn_blocking(move || procs::processes_of(pid))
                .await
                .unwrap_or_default(),
        };
        let mut lines = vec![procs::PROCESS_HEADER.to_string()];
        lines.extend(procs.iter().map(procs::format_process));
        if procs.is_empty() {
            lines = vec!["(no running process)".to_string()];
        }
        sink.lines(target.id.as_str(), lines)
            .await
            .map_err(cancelled)?;
    }
    Ok(())
}

async fn run_ports(ctx: &Ctx, targets: &[Target], sink: &Sink) -> Result<(), String> {
    for target in targets {
        let root = root_pid(ctx, target).await;
        let lines = tokio::task::spawn_blocking(move || {
            if root == 0 {
                return Vec::new();
            }
            procs::listening_ports(&procs::processes_of(root))
        })
        .await
        .unwrap_or_default();
        let lines = if lines.is_empty() {
            vec!["(no listening socket)".to_string()]
        } else {
            lines
        };
        sink.lines(target.id.as_str(), lines)
            .await
            .map_err(cancelled)?;
    }
    Ok(())
}

/// The process an instance's tree hangs from: the recorded pid, or for a container the
/// engine's view of its init.
async fn root_pid(ctx: &Ctx, target: &Target) -> u32 {
    if target.pid != 0 {
        return target.pid;
    }
    ctx.supervisor.container_pid(&target.id).await.unwrap_or(0)
}
