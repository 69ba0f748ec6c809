//! The listener: a thread with its own connection running `LISTEN berth_kv`, feeding
//! every committed transaction of every process into this process's [`Feed`].
//!
//! Indexes are gapless and notifications arrive in commit order, so the listener knows
//! when it missed something: after its connection broke (it reconnects with backoff) or
//! on a jump in the indexes. Either way it publishes [`Change::Resync`] with the counter
//! read after listening again, which also moves the watch, and subscribers list again.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use serde::{Deserialize, Serialize};

use super::{CHANNEL, describe_error, read_index};
use crate::feed::ChangeSet;
use crate::{Change, Feed, KvError, Space};

/// How long one wait for a notification lasts before the thread checks whether its
/// store is gone.
const TICK: Duration = Duration::from_millis(200);
/// Idle ticks between pings, which find a connection that died silently.
const PING_EVERY_TICKS: u32 = 25;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// `pg_notify` refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7900;

/// The payload of one notification: a [`Change::Written`] in short field names.
#[derive(Serialize, Deserialize)]
struct Note {
    i: u64,
    s: String,
    #[serde(default)]
    k: Vec<String>,
    #[serde(default)]
    p: Vec<String>,
}

/// The payload for a transaction's changes. One too large to name its keys names its
/// whole space instead (prefix `""`): subscribers then re-read more than needed, never
/// less.
pub(super) fn encode(index: u64, space: &Space, changes: &ChangeSet) -> String {
    let note = Note {
        i: index,
        s: space.to_string(),
        k: changes.keys.clone(),
        p: changes.prefixes.clone(),
    };
    match serde_json::to_string(&note) {
        Ok(text) if text.len() <= MAX_PAYLOAD => text,
        _ => format!(r#"{{"i":{index},"s":"{space}","p":[""]}}"#),
    }
}

fn decode(payload: &str) -> Option<Change> {
    let note: Note = serde_json::from_str(payload).ok()?;
    Some(Change::Written {
        index: note.i,
        space: Space::new(&note.s).ok()?,
        keys: note.k,
        prefixes: note.p,
    })
}

/// Stops the thread when dropped (it notices within a [`TICK`]).
pub(super) struct Listener {
    _stop: mpsc::Sender<()>,
}

struct Ctx {
    config: postgres::Config,
    target: String,
    feed: Arc<Feed>,
    stop: mpsc::Receiver<()>,
}

impl Listener {
    /// Listens before returning, so a change committed after this returns is seen.
    pub(super) fn start(
        mut config: postgres::Config,
        target: String,
        feed: Arc<Feed>,
    ) -> Result<Listener, KvError> {
        config.application_name("berth-kv-listen");
        let (client, index) = listen(&config).map_err(|source| KvError::OpenPostgres {
            target: target.clone(),
            source,
        })?;
        feed.advance(index);
        let (stop_tx, stop) = mpsc::channel();
        let ctx = Ctx {
            config,
            target,
            feed,
            stop,
        };
        std::thread::Builder::new()
            .name("berth-kv-listen".into())
            .spawn(move || run(ctx, client, index))
            .map_err(|source| KvError::Thread { source })?;
        Ok(Listener { _stop: stop_tx })
    }
}

/// A connection listening on the channel, and the counter read after `LISTEN` took
/// effect: every change up to it is in the database, every later one will be notified.
fn listen(config: &postgres::Config) -> Result<(Client, u64), postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    let index = read_index(&mut client)?;
    Ok((client, index))
}

enum Ended {
    Stopped,
    Broken(String),
}

fn run(ctx: Ctx, mut client: Client, mut last: u64) {
    loop {
        match follow(&ctx, &mut client, &mut last) {
            Ended::Stopped => return,
            Ended::Broken(why) => tracing::warn!(
                target = %ctx.target,
                error = %why,
                "key/value change listener lost its connection; reconnecting, then subscribers resync"
            ),
        }
        let Some((fresh, index)) = reconnect(&ctx) else {
            return;
        };
        client = fresh;
        last = index;
        ctx.feed.publish(Change::Resync { index });
    }
}

/// Follows notifications until the store goes or the connection breaks.
fn follow(ctx: &Ctx, client: &mut Client, last: &mut u64) -> Ended {
    let mut idle = 0;
    loop {
        if let Err(TryRecvError::Disconnected) = ctx.stop.try_recv() {
            return Ended::Stopped;
        }
        let next = client.notifications().timeout_iter(TICK).next();
        match next {
            Ok(Some(note)) => {
                idle = 0;
                handle(ctx, note.payload(), last);
            }
            Ok(None) if client.is_closed() => {
                return Ended::Broken("the server closed the connection".into());
            }
            Ok(None) => {
                idle += 1;
                if idle >= PING_EVERY_TICKS {
                    idle = 0;
                    if let Err(e) = client.simple_query("SELECT 1") {
                        return Ended::Broken(describe_error(&e));
                    }
                }
            }
            Err(e) => return Ended::Broken(describe_error(&e)),
        }
    }
}

fn handle(ctx: &Ctx, payload: &str, last: &mut u64) {
    let Some(change) = decode(payload) else {
        tracing::warn!(
            payload,
            "ignoring a notification on {CHANNEL} that is not Berth's"
        );
        return;
    };
    let index = change.index();
    if index <= *last {
        // Already covered by the counter read when listening began.
        return;
    }
    if index > *last + 1 {
        tracing::warn!(
            after = *last,
            got = index,
            "key/value change notifications skipped indexes; subscribers resync"
        );
        ctx.feed.publish(Change::Resync { index });
    } else {
        ctx.feed.publish(change);
    }
    *last = index;
}

/// Connects and listens again, backing off while the database is unreachable; `None`
/// when the store went meanwhile.
fn reconnect(ctx: &Ctx) -> Option<(Client, u64)> {
    let mut backoff = BACKOFF_FIRST;
    loop {
        // Waiting on the stop channel doubles as the backoff sleep.
        match ctx.stop.recv_timeout(backoff) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return None,
        }
        match listen(&ctx.config) {
            Ok(listening) => {
                tracing::info!(target = %ctx.target, "key/value change listener reconnected");
                return Some(listening);
            }
            Err(e) => {
                tracing::warn!(
                    target = %ctx.target,
                    error = %describe_error(&e),
                    retry_in = ?backoff,
                    "key/value change listener cannot reconnect"
                );
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> Space {
        Space::new("kv").unwrap()
    }

    fn written(keys: Vec<String>) -> ChangeSet {
        ChangeSet {
            keys,
            prefixes: vec!["a/".into()],
        }
    }

    #[test]
    fn payloads_round_trip() {
        let changes = written(vec!["x".into(), "y/z".into()]);
        assert_eq!(
            decode(&encode(7, &kv(), &changes)),
            Some(Change::Written {
                index: 7,
                space: kv(),
                keys: vec!["x".into(), "y/z".into()],
                prefixes: vec!["a/".into()],
            })
        );
        assert_eq!(decode("not json"), None);
        assert_eq!(decode(r#"{"i":1,"s":"Bad Space"}"#), None);
    }

    #[test]
    fn an_oversized_change_names_its_whole_space() {
        let changes = written(
            (0..20)
                .map(|i| format!("{i}{}", "k".repeat(1000)))
                .collect(),
        );
        let payload = encode(7, &kv(), &changes);
        assert!(payload.len() < 8000);
        let Some(Change::Written { keys, prefixes, .. }) = decode(&payload) else {
            panic!("{payload}")
        };
        assert!(keys.is_empty());
        assert_eq!(prefixes, [""]);
        assert!(decode(&payload).unwrap().affects(&kv(), "anything"));
    }
}
