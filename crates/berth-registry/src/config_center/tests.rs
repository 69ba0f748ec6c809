use std::sync::Arc;
use std::time::Duration;

use berth_kv::{KvHandle, KvOptions, SqliteKv};

use super::listen::wait_for_change;
use super::*;

fn center(max: usize) -> ConfigCenter {
    let store = SqliteKv::in_memory(kv_options(KvOptions::default())).expect("store");
    ConfigCenter::new(KvHandle::new(Arc::new(store)), max)
}

fn key(data_id: &str) -> ConfigKey {
    ConfigKey::new("", "", data_id).unwrap()
}

fn yaml() -> ConfigMeta {
    ConfigMeta {
        kind: "yaml".into(),
        ..ConfigMeta::default()
    }
}

#[tokio::test]
async fn publish_get_remove_with_md5_type_and_default_names() {
    let c = center(DEFAULT_MAX_CONTENT);
    let k = key("app.yaml");
    assert_eq!(k.tenant, "public");
    assert_eq!(k.group, DEFAULT_GROUP);
    assert_eq!(k.tenant_for_clients(), "");
    assert!(c.get(&k).await.unwrap().is_none());
    let stored = c
        .publish(&k, "a: 1", &yaml(), None, actor(Some("ops"), None))
        .await
        .unwrap();
    assert_eq!(stored.md5, berth_kv::md5_hex(b"a: 1"));
    assert_eq!(stored.meta.kind, "yaml");
    let got = c.get(&k).await.unwrap().unwrap();
    assert_eq!(got.content, "a: 1");
    // An update keeps the creation time.
    let updated = c
        .publish(&k, "a: 2", &ConfigMeta::default(), None, Actor::default())
        .await
        .unwrap();
    assert_eq!(updated.created_ms, stored.created_ms);
    assert_eq!(
        updated.meta.kind, "text",
        "an unknown or empty type is text"
    );
    assert!(c.remove(&k, Actor::default()).await.unwrap());
    assert!(!c.remove(&k, Actor::default()).await.unwrap());
}

#[tokio::test]
async fn cas_publishes_only_over_the_named_md5_and_names_the_current_one() {
    let c = center(DEFAULT_MAX_CONTENT);
    let k = key("db.properties");
    let first = c
        .publish(&k, "x=1", &yaml(), Some("whatever"), Actor::default())
        .await
        .unwrap();
    // A config that did not exist is created, as Nacos does.
    assert_eq!(first.content, "x=1");
    let second = c
        .publish(&k, "x=2", &yaml(), Some(&first.md5), Actor::default())
        .await
        .unwrap();
    let err = c
        .publish(&k, "x=3", &yaml(), Some(&first.md5), Actor::default())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("Cas publish fail"), "{message}");
    assert!(
        message.contains(&second.md5),
        "the current md5 is named: {message}"
    );
    assert_eq!(c.get(&k).await.unwrap().unwrap().content, "x=2");
}

#[tokio::test]
async fn bad_names_sizes_and_blank_content_are_refused_with_the_field() {
    let c = center(8);
    for (tenant, group, data_id, field) in [
        ("", "", "", "dataId"),
        ("", "", "a/b", "dataId"),
        ("", "g r", "a", "group"),
        ("x y", "", "a", "tenant"),
    ] {
        let err = ConfigKey::new(tenant, group, data_id)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(field), "{field}: {err}");
    }
    assert!(
        ConfigKey::new("", "", "配置.yaml").is_ok(),
        "letters of any script"
    );
    let k = key("big");
    let err = c
        .publish(&k, "123456789", &yaml(), None, Actor::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("over the limit of 8 bytes"),
        "{err}"
    );
    let err = c
        .publish(&k, "  ", &yaml(), None, Actor::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ConfigError::Empty), "{err}");
}

#[tokio::test]
async fn history_pages_previous_and_rollback() {
    let c = center(DEFAULT_MAX_CONTENT);
    let k = key("h");
    for n in 1..=3 {
        c.publish(
            &k,
            &format!("v{n}"),
            &yaml(),
            None,
            actor(Some("alice"), "10.0.0.7".parse().ok()),
        )
        .await
        .unwrap();
    }
    c.remove(&k, actor(Some("bob"), None)).await.unwrap();
    let (total, page) = c.history(&k, 1, 2).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].op, "D");
    assert_eq!(page[0].author, "bob");
    assert_eq!(page[1].content, "v3");
    assert_eq!(page[1].source_ip, "10.0.0.7");
    let (_, all) = c.history(&k, 1, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|h| h.op).collect::<Vec<_>>(),
        ["D", "U", "U", "I"]
    );
    let previous = c.history_previous(&k, all[1].id).await.unwrap().unwrap();
    assert_eq!(previous.content, "v2");
    let restored = c.rollback(&k, all[3].id, Actor::default()).await.unwrap();
    assert_eq!(restored.content, "v1");
    assert!(matches!(
        c.rollback(&key("other"), all[3].id, Actor::default()).await,
        Err(ConfigError::HistoryNotFound(_))
    ));
}

#[tokio::test]
async fn list_filters_by_group_and_pattern() {
    let c = center(DEFAULT_MAX_CONTENT);
    for (group, id) in [("A", "web.yaml"), ("A", "db.yaml"), ("B", "web.json")] {
        let k = ConfigKey::new("", group, id).unwrap();
        c.publish(&k, "x", &yaml(), None, Actor::default())
            .await
            .unwrap();
    }
    let (total, _) = c.list("", None, None, 1, 10).await.unwrap();
    assert_eq!(total, 3);
    let (total, page) = c.list("", Some("A"), Some("web*"), 1, 10).await.unwrap();
    assert_eq!((total, page[0].key.data_id.as_str()), (1, "web.yaml"));
    let (total, _) = c.list("", None, Some("*.yaml"), 1, 10).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(c.count().await.unwrap(), 3);
}

#[tokio::test]
async fn a_listener_wakes_on_a_change_and_answers_at_once_when_already_stale() {
    let c = center(DEFAULT_MAX_CONTENT);
    let k = key("live");
    let stale = wait_for_change(&c, &[(k.clone(), "abc".into())], Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(stale, std::slice::from_ref(&k));
    let waiting = {
        let (c, k) = (c.clone(), k.clone());
        tokio::spawn(async move {
            wait_for_change(&c, &[(k, String::new())], Duration::from_secs(10)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.publish(&k, "on", &yaml(), None, Actor::default())
        .await
        .unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("woken by the change")
        .unwrap()
        .unwrap();
    assert_eq!(woke, [k]);
    let none = wait_for_change(
        &c,
        &[(key("quiet"), String::new())],
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    assert!(none.is_empty());
}

/// Writers racing on one config, some with compare-and-set, some plain: every
/// acknowledged write is in the history, and every acknowledged compare-and-set was
/// applied right on top of the version whose md5 it named (none was lost under another).
pub(crate) async fn racing_writes_lose_nothing(centers: Vec<ConfigCenter>) {
    let k = key("raced");
    centers[0]
        .publish(&k, "start", &yaml(), None, Actor::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for (n, c) in centers.iter().cycle().take(6).enumerate() {
        let (c, k) = (c.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for round in 0..12 {
                let content = format!("writer {n} round {round}");
                if n % 3 == 0 {
                    let stored = c
                        .publish(&k, &content, &yaml(), None, Actor::default())
                        .await
                        .unwrap();
                    acked.push((stored.md5, None));
                    continue;
                }
                loop {
                    let current = c.get(&k).await.unwrap().unwrap();
                    match c
                        .publish(&k, &content, &yaml(), Some(&current.md5), Actor::default())
                        .await
                    {
                        Ok(stored) => {
                            acked.push((stored.md5, Some(current.md5)));
                            break;
                        }
                        Err(ConfigError::CasMismatch { .. }) => continue,
                        Err(other) => panic!("{other}"),
                    }
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let (total, history) = centers[0].history(&k, 1, 1000).await.unwrap();
    assert_eq!(
        total as usize,
        acked.len() + 1,
        "one record per acknowledged write"
    );
    // Oldest first; each record's md5 and the one before it.
    let chain: Vec<&str> = history.iter().rev().map(|h| h.md5.as_str()).collect();
    for (md5, based_on) in &acked {
        let at = chain
            .iter()
            .position(|m| m == md5)
            .unwrap_or_else(|| panic!("an acknowledged write is missing: {md5}"));
        if let Some(base) = based_on {
            assert!(
                at > 0 && chain[at - 1] == base,
                "a compare-and-set did not follow {base}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_on_sqlite_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = berth_kv::SqliteKv::open(
        &dir.path().join("kv.sqlite3"),
        kv_options(KvOptions::default()),
    )
    .unwrap();
    let c = ConfigCenter::new(KvHandle::new(Arc::new(store)), DEFAULT_MAX_CONTENT);
    racing_writes_lose_nothing(vec![c]).await;
}

/// Two members' stores on one PostgreSQL database, writers racing through both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_through_two_members_on_postgres_lose_nothing() {
    let pg = berth_testkit::postgres::TempPostgres::start();
    let url = pg.create_database("configs");
    let mut centers = Vec::new();
    for _ in 0..2 {
        let url = url.clone();
        let store = tokio::task::spawn_blocking(move || {
            berth_kv::PostgresKv::open(&url, kv_options(KvOptions::default()))
        })
        .await
        .unwrap()
        .unwrap();
        centers.push(ConfigCenter::new(
            KvHandle::new(Arc::new(store)),
            DEFAULT_MAX_CONTENT,
        ));
    }
    racing_writes_lose_nothing(centers).await;
}
