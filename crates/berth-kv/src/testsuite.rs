//! The behaviour every [`KvStore`] engine must have. An engine's tests call [`run_all`]
//! with a constructor of empty stores, and [`concurrent_cas_increments`] with stores on
//! one database.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::{
    Actor, Attrs, Change, Cond, HistoryOp, KvError, KvOptions, KvStore, Op, OpResult, Space,
    SpaceOptions, Txn, TxnOutcome, md5_hex,
};

/// What every check opens its store with: `kv` without history, `config` with, and a
/// small value limit.
pub fn options() -> KvOptions {
    KvOptions::default()
        .space(kv(), SpaceOptions::default())
        .space(config(), SpaceOptions { keep_history: true })
        .max_value_bytes(LIMIT)
}

const LIMIT: usize = 4096;

pub fn kv() -> Space {
    Space::new("kv").unwrap()
}

pub fn config() -> Space {
    Space::new("config").unwrap()
}

type Check = fn(&dyn KvStore);

/// Runs every check, each on a fresh store from `fresh`. Panics on the first failure,
/// naming the check.
pub fn run_all(fresh: &dyn Fn(KvOptions) -> Box<dyn KvStore>) {
    let checks: &[(&str, Check)] = &[
        ("put_get_delete", put_get_delete),
        ("spaces_are_apart", spaces_are_apart),
        ("indexes_increase", indexes_increase_and_create_index_stays),
        ("cas_by_modify_index", cas_by_modify_index),
        ("cas_by_md5", cas_by_md5),
        ("absent_condition", absent_condition),
        ("failed_txn_writes_nothing", failed_txn_writes_nothing),
        ("ops_see_earlier_ops", ops_see_earlier_ops),
        ("read_only_txn", read_only_txn_takes_no_index),
        ("delete_prefix", delete_prefix),
        ("prefix_listing", prefix_listing_limit_and_separator_keys),
        ("value_size_limit", value_size_limit),
        ("key_validation", key_and_space_validation),
        ("history_records", history_records_carry_actor_and_op),
        ("history_paging", history_paging_and_previous),
        ("history_prune", history_prune),
        ("change_feed", change_feed_delivers_changes_with_their_index),
        ("watch_index", watch_index_advances),
    ];
    for (name, check) in checks {
        eprintln!("conformance: {name}");
        check(fresh(options()).as_ref());
    }
}

fn attrs(pairs: &[(&str, &str)]) -> Attrs {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(store: &dyn KvStore, txn: Txn) -> TxnOutcome {
    store.txn(&txn).expect("txn runs")
}

fn failed(outcome: TxnOutcome) -> crate::CondFailed {
    match outcome {
        TxnOutcome::Failed(f) => *f,
        TxnOutcome::Committed(c) => panic!("expected a failed condition, committed {c:?}"),
    }
}

fn put_get_delete(store: &dyn KvStore) {
    let a = attrs(&[("type", "yaml"), ("appName", "shop")]);
    let e = store
        .put(&kv(), "a/b", b"hello".to_vec(), a.clone())
        .unwrap();
    assert_eq!(e.value, b"hello");
    assert_eq!(e.md5, md5_hex(b"hello"));
    assert_eq!(e.attrs, a);
    assert!(e.updated_at_ms > 1_600_000_000_000, "{}", e.updated_at_ms);
    assert_eq!(store.get(&kv(), "a/b").unwrap(), Some(e.clone()));
    assert_eq!(store.get(&kv(), "nope").unwrap(), None);
    let empty = store.put(&kv(), "empty", Vec::new(), Attrs::new()).unwrap();
    assert_eq!(store.get(&kv(), "empty").unwrap().unwrap().value, b"");
    assert_eq!(empty.md5, "d41d8cd98f00b204e9800998ecf8427e");
    // Binary values survive as they are.
    let bytes: Vec<u8> = (0..=255).collect();
    store
        .put(&kv(), "bin", bytes.clone(), Attrs::new())
        .unwrap();
    assert_eq!(store.get(&kv(), "bin").unwrap().unwrap().value, bytes);
    assert_eq!(store.delete(&kv(), "a/b").unwrap(), Some(e));
    assert_eq!(store.get(&kv(), "a/b").unwrap(), None);
    assert_eq!(store.delete(&kv(), "a/b").unwrap(), None);
}

fn spaces_are_apart(store: &dyn KvStore) {
    store.put(&kv(), "k", b"kv".to_vec(), Attrs::new()).unwrap();
    store
        .put(&config(), "k", b"config".to_vec(), Attrs::new())
        .unwrap();
    assert_eq!(store.get(&kv(), "k").unwrap().unwrap().value, b"kv");
    assert_eq!(store.get(&config(), "k").unwrap().unwrap().value, b"config");
    let txn = Txn::new(kv()).op(Op::delete_prefix(""));
    run(store, txn);
    assert_eq!(store.list(&kv(), "", None).unwrap(), vec![]);
    assert_eq!(store.list(&config(), "", None).unwrap().len(), 1);
}

fn indexes_increase_and_create_index_stays(store: &dyn KvStore) {
    let start = store.current_index();
    let a1 = store.put(&kv(), "a", b"1".to_vec(), Attrs::new()).unwrap();
    assert!(a1.modify_index > start);
    assert_eq!(a1.create_index, a1.modify_index, "created now");
    let b = store
        .put(&config(), "b", b"1".to_vec(), Attrs::new())
        .unwrap();
    assert_eq!(
        b.modify_index,
        a1.modify_index + 1,
        "one index for all spaces"
    );
    let a2 = store.put(&kv(), "a", b"2".to_vec(), Attrs::new()).unwrap();
    assert_eq!(
        a2.create_index, a1.create_index,
        "an update keeps create_index"
    );
    assert_eq!(a2.modify_index, b.modify_index + 1);
    // One index for the whole transaction.
    let outcome = run(
        store,
        Txn::new(kv()).op(Op::put("x", "1")).op(Op::put("y", "1")),
    )
    .committed()
    .unwrap();
    assert_eq!(outcome.index, a2.modify_index + 1);
    let [OpResult::Put(x), OpResult::Put(y)] = &outcome.results[..] else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (x.modify_index, y.modify_index),
        (outcome.index, outcome.index)
    );
    // Deleted and created again: a new create_index.
    store.delete(&kv(), "a").unwrap();
    let a3 = store.put(&kv(), "a", b"3".to_vec(), Attrs::new()).unwrap();
    assert_eq!(a3.create_index, a3.modify_index);
    assert!(a3.create_index > a2.modify_index);
    // A transaction that changes nothing takes no index.
    let before = store.current_index();
    let nothing = run(store, Txn::new(kv()).op(Op::delete("never-there")))
        .committed()
        .unwrap();
    assert_eq!(nothing.index, before);
    assert_eq!(store.current_index(), before);
    let next = store.put(&kv(), "z", b"1".to_vec(), Attrs::new()).unwrap();
    assert_eq!(next.modify_index, before + 1, "indexes have no gaps");
}

fn cas_by_modify_index(store: &dyn KvStore) {
    // 0 means "must be absent" (Consul's cas=0).
    let created = run(
        store,
        Txn::new(kv()).op(Op::put_if("k", "1", Cond::ModifyIndex(0))),
    )
    .committed()
    .unwrap();
    let OpResult::Put(v1) = &created.results[0] else {
        panic!()
    };
    let f = failed(run(
        store,
        Txn::new(kv()).op(Op::put_if("k", "x", Cond::ModifyIndex(0))),
    ));
    assert_eq!(f.current.as_ref(), Some(v1));
    let ok = run(
        store,
        Txn::new(kv()).op(Op::put_if("k", "2", Cond::ModifyIndex(v1.modify_index))),
    );
    assert!(matches!(ok, TxnOutcome::Committed(_)), "{ok:?}");
    let v2 = store.get(&kv(), "k").unwrap().unwrap();
    let stale = failed(run(
        store,
        Txn::new(kv()).op(Op::put_if("k", "3", Cond::ModifyIndex(v1.modify_index))),
    ));
    assert_eq!(stale.op, 0);
    assert_eq!(stale.key, "k");
    assert_eq!(stale.cond, Cond::ModifyIndex(v1.modify_index));
    assert_eq!(stale.current.as_ref(), Some(&v2), "names the current entry");
    let text = stale.to_string();
    assert!(
        text.contains(&format!("modify index {}", v2.modify_index)),
        "{text}"
    );
    assert_eq!(store.get(&kv(), "k").unwrap().unwrap().value, b"2");
    // Delete by index, too.
    let stale_delete = failed(run(
        store,
        Txn::new(kv()).op(Op::delete_if("k", Cond::ModifyIndex(v1.modify_index))),
    ));
    assert_eq!(stale_delete.current, Some(v2.clone()));
    run(
        store,
        Txn::new(kv()).op(Op::delete_if("k", Cond::ModifyIndex(v2.modify_index))),
    )
    .committed()
    .unwrap();
    assert_eq!(store.get(&kv(), "k").unwrap(), None);
    // An index on an absent key fails, naming no entry.
    let gone = failed(run(
        store,
        Txn::new(kv()).op(Op::put_if("k", "4", Cond::ModifyIndex(v2.modify_index))),
    ));
    assert_eq!(gone.current, None);
    assert!(gone.to_string().contains("absent"), "{gone}");
}

fn cas_by_md5(store: &dyn KvStore) {
    let v1 = store
        .put(&config(), "app.yaml", b"port: 1".to_vec(), Attrs::new())
        .unwrap();
    let ok = run(
        store,
        Txn::new(config()).op(Op::put_if(
            "app.yaml",
            "port: 2",
            Cond::ValueMd5(md5_hex(b"port: 1")),
        )),
    );
    assert!(matches!(ok, TxnOutcome::Committed(_)), "{ok:?}");
    let f = failed(run(
        store,
        Txn::new(config()).op(Op::put_if("app.yaml", "port: 3", Cond::ValueMd5(v1.md5))),
    ));
    let current = f.current.clone().expect("names the current entry");
    assert_eq!(current.md5, md5_hex(b"port: 2"));
    let text = f.to_string();
    assert!(text.contains(&current.md5), "{text}");
    // Either case of hex.
    let upper = md5_hex(b"port: 2").to_uppercase();
    let ok = run(
        store,
        Txn::new(config()).op(Op::put_if("app.yaml", "port: 4", Cond::ValueMd5(upper))),
    );
    assert!(matches!(ok, TxnOutcome::Committed(_)), "{ok:?}");
    // An absent key fails an md5 condition.
    let absent = failed(run(
        store,
        Txn::new(config()).op(Op::put_if("nope", "x", Cond::ValueMd5(md5_hex(b"")))),
    ));
    assert_eq!(absent.current, None);
    assert_eq!(store.get(&config(), "nope").unwrap(), None);
}

fn absent_condition(store: &dyn KvStore) {
    run(
        store,
        Txn::new(kv()).op(Op::put_if("lock", "me", Cond::Absent)),
    )
    .committed()
    .unwrap();
    let f = failed(run(
        store,
        Txn::new(kv()).op(Op::put_if("lock", "you", Cond::Absent)),
    ));
    assert_eq!(f.current.unwrap().value, b"me");
    assert_eq!(store.get(&kv(), "lock").unwrap().unwrap().value, b"me");
    let check = run(store, Txn::new(kv()).op(Op::check("free", Cond::Absent)));
    assert!(matches!(check, TxnOutcome::Committed(_)));
}

fn failed_txn_writes_nothing(store: &dyn KvStore) {
    store
        .put(&config(), "a", b"1".to_vec(), Attrs::new())
        .unwrap();
    store
        .put(&config(), "gone", b"1".to_vec(), Attrs::new())
        .unwrap();
    let index = store.current_index();
    let mut feed = store.subscribe();
    let txn = Txn::new(config())
        .op(Op::put("a", "2"))
        .op(Op::put("new", "1"))
        .op(Op::delete("gone"))
        .op(Op::delete_prefix(""))
        .op(Op::check("a", Cond::ModifyIndex(1)));
    let f = failed(run(store, txn));
    assert_eq!(f.op, 4, "names the failing op");
    assert_eq!(f.key, "a");
    // The current entry as the op saw it, after the txn's own earlier ops.
    assert_eq!(f.current, None);
    assert_eq!(store.get(&config(), "a").unwrap().unwrap().value, b"1");
    assert_eq!(store.get(&config(), "new").unwrap(), None);
    assert!(store.get(&config(), "gone").unwrap().is_some());
    assert_eq!(store.current_index(), index, "no index taken");
    assert_eq!(
        store.history(&config(), "a", 0, 10).unwrap().total,
        1,
        "no history written"
    );
    // The next write takes the very next index: nothing was consumed.
    let e = store
        .put(&config(), "b", b"1".to_vec(), Attrs::new())
        .unwrap();
    assert_eq!(e.modify_index, index + 1);
    let change = recv_after(&mut feed, index);
    assert_eq!(
        change.index(),
        index + 1,
        "the failed txn announced nothing"
    );
}

fn ops_see_earlier_ops(store: &dyn KvStore) {
    let outcome = run(
        store,
        Txn::new(kv())
            .op(Op::put("k", "1"))
            .op(Op::get("k"))
            .op(Op::put_if("k", "2", Cond::ValueMd5(md5_hex(b"1"))))
            .op(Op::get_prefix(""))
            .op(Op::delete("k"))
            .op(Op::check("k", Cond::Absent)),
    )
    .committed()
    .unwrap();
    let r = &outcome.results;
    assert!(
        matches!(&r[1], OpResult::Got(Some(e)) if e.value == b"1"),
        "{r:?}"
    );
    assert!(matches!(&r[3], OpResult::GotPrefix(es) if es.len() == 1 && es[0].value == b"2"));
    assert!(matches!(&r[4], OpResult::Deleted(Some(e)) if e.value == b"2"));
    assert_eq!(r[5], OpResult::Checked);
    assert_eq!(store.get(&kv(), "k").unwrap(), None);
}

fn read_only_txn_takes_no_index(store: &dyn KvStore) {
    let e = store.put(&kv(), "k", b"1".to_vec(), Attrs::new()).unwrap();
    let outcome = run(
        store,
        Txn::new(kv())
            .op(Op::get("k"))
            .op(Op::check("k", Cond::ModifyIndex(e.modify_index))),
    )
    .committed()
    .unwrap();
    assert_eq!(
        outcome.index, e.modify_index,
        "the index its snapshot is at"
    );
    assert_eq!(outcome.results[0], OpResult::Got(Some(e.clone())));
    let f = failed(run(store, Txn::new(kv()).op(Op::check("k", Cond::Absent))));
    assert_eq!(f.current, Some(e));
}

fn delete_prefix(store: &dyn KvStore) {
    for k in ["a/1", "a/2", "a/b/3", "ab", "b/1"] {
        store
            .put(&config(), k, b"v".to_vec(), Attrs::new())
            .unwrap();
    }
    let outcome = run(store, Txn::new(config()).op(Op::delete_prefix("a/")))
        .committed()
        .unwrap();
    assert_eq!(outcome.results, vec![OpResult::DeletedPrefix(3)]);
    assert_eq!(store.list_keys(&config(), "", None).unwrap(), ["ab", "b/1"]);
    // In a history-keeping space, each deleted key gets its record.
    let h = store.history(&config(), "a/b/3", 0, 10).unwrap();
    assert_eq!(h.records[0].op, HistoryOp::Delete);
    assert_eq!(h.records[0].index, outcome.index);
    // Nothing under the prefix: nothing written, no index.
    let before = store.current_index();
    let none = run(store, Txn::new(config()).op(Op::delete_prefix("zz")))
        .committed()
        .unwrap();
    assert_eq!(
        (none.index, &none.results[..]),
        (before, &[OpResult::DeletedPrefix(0)][..])
    );
}

fn prefix_listing_limit_and_separator_keys(store: &dyn KvStore) {
    for k in [
        "web/a", "web/b/c", "web/b/d", "web/e/", "web0", "webz", "w", "x/é/1",
    ] {
        store
            .put(&kv(), k, k.as_bytes().to_vec(), Attrs::new())
            .unwrap();
    }
    let listed: Vec<_> = store
        .list(&kv(), "web/", None)
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(listed, ["web/a", "web/b/c", "web/b/d", "web/e/"]);
    let limited: Vec<_> = store
        .list(&kv(), "web", Some(2))
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(limited, ["web/a", "web/b/c"], "in key order");
    assert_eq!(
        store.list_keys(&kv(), "", None).unwrap(),
        [
            "w", "web/a", "web/b/c", "web/b/d", "web/e/", "web0", "webz", "x/é/1"
        ]
    );
    assert_eq!(store.list_keys(&kv(), "x/é", None).unwrap(), ["x/é/1"]);
    assert_eq!(
        store.list_keys(&kv(), "nothing", Some(5)).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        store.keys(&kv(), "web/", Some("/")).unwrap(),
        ["web/a", "web/b/", "web/e/"]
    );
    assert_eq!(
        store.keys(&kv(), "", Some("/")).unwrap(),
        ["w", "web/", "web0", "webz", "x/"]
    );
    assert_eq!(
        store.keys(&kv(), "web/b/", None).unwrap(),
        ["web/b/c", "web/b/d"]
    );
}

fn value_size_limit(store: &dyn KvStore) {
    store
        .put(&kv(), "max", vec![b'x'; LIMIT], Attrs::new())
        .expect("a value at the limit is fine");
    let err = store
        .put(&kv(), "big", vec![b'x'; LIMIT + 1], Attrs::new())
        .unwrap_err();
    assert!(
        matches!(err, KvError::ValueTooLarge { size, limit, .. } if size == LIMIT + 1 && limit == LIMIT),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("4097") && text.contains("4096") && text.contains("big"),
        "{text}"
    );
    // Refused before anything in the txn is written.
    let err = store
        .txn(
            &Txn::new(kv())
                .op(Op::put("small", "1"))
                .op(Op::put("big", vec![0; LIMIT + 1])),
        )
        .unwrap_err();
    assert!(matches!(err, KvError::ValueTooLarge { .. }));
    assert_eq!(store.get(&kv(), "small").unwrap(), None);
}

fn key_and_space_validation(store: &dyn KvStore) {
    let long = "k".repeat(1025);
    for (key, word) in [("", "empty"), ("a\0b", "NUL"), (long.as_str(), "1024")] {
        let err = store
            .put(&kv(), key, b"v".to_vec(), Attrs::new())
            .unwrap_err();
        assert!(matches!(err, KvError::InvalidKey { .. }), "{err}");
        assert!(err.to_string().contains(word), "{err}");
        assert!(store.get(&kv(), key).is_err());
    }
    let err = store.get(&kv(), "a\0b").unwrap_err().to_string();
    assert!(err.contains("a\\0b"), "names the key: {err}");
    assert!(store.list(&kv(), "a\0", None).is_err());
    store
        .put(&kv(), &"k".repeat(1024), b"v".to_vec(), Attrs::new())
        .expect("a key at the limit is fine");
    let unknown = Space::new("cofnig").unwrap();
    let err = store.get(&unknown, "k").unwrap_err();
    assert!(matches!(err, KvError::UnknownSpace { .. }), "{err}");
    assert!(err.to_string().contains("config, kv"), "{err}");
    assert!(store.txn(&Txn::new(unknown).op(Op::put("k", "v"))).is_err());
}

fn history_records_carry_actor_and_op(store: &dyn KvStore) {
    let alice = Actor {
        author: Some("alice".into()),
        source_ip: Some("10.0.0.1".into()),
    };
    let a = attrs(&[("type", "json")]);
    run(
        store,
        Txn::new(config())
            .op(Op::Put {
                key: "app".into(),
                value: b"v1".to_vec(),
                attrs: a.clone(),
                cond: Cond::Any,
            })
            .by(alice.clone()),
    );
    run(store, Txn::new(config()).op(Op::put("app", "v2")));
    let deleted = run(
        store,
        Txn::new(config()).op(Op::delete("app")).by(Actor {
            author: Some("bob".into()),
            source_ip: None,
        }),
    )
    .committed()
    .unwrap();
    let page = store.history(&config(), "app", 0, 10).unwrap();
    assert_eq!(page.total, 3);
    let [del, upd, cre] = &page.records[..] else {
        panic!("{page:?}")
    };
    assert_eq!(
        (cre.op, upd.op, del.op),
        (HistoryOp::Create, HistoryOp::Update, HistoryOp::Delete)
    );
    assert_eq!(cre.value, b"v1");
    assert_eq!(cre.md5, md5_hex(b"v1"));
    assert_eq!(cre.attrs, a);
    assert_eq!(cre.author.as_deref(), Some("alice"));
    assert_eq!(cre.source_ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(
        (upd.author.as_deref(), upd.source_ip.as_deref()),
        (None, None)
    );
    assert_eq!(del.value, b"v2", "a delete records the value deleted");
    assert_eq!(del.author.as_deref(), Some("bob"));
    assert_eq!(del.index, deleted.index);
    assert!(cre.id < upd.id && upd.id < del.id);
    assert!(cre.at_ms > 1_600_000_000_000 && cre.at_ms <= del.at_ms);
    assert_eq!(cre.space, config());
    assert_eq!(cre.key, "app");
    assert_eq!(
        store.history_record(&config(), upd.id).unwrap().as_ref(),
        Some(upd)
    );
    assert_eq!(store.history_record(&config(), del.id + 100).unwrap(), None);
    assert_eq!(
        store.history_record(&kv(), upd.id).unwrap(),
        None,
        "other space"
    );
    // A space without history keeps none.
    store
        .put(&kv(), "app", b"x".to_vec(), Attrs::new())
        .unwrap();
    store.delete(&kv(), "app").unwrap();
    assert_eq!(store.history(&kv(), "app", 0, 10).unwrap().total, 0);
}

fn history_paging_and_previous(store: &dyn KvStore) {
    for i in 1..=7 {
        let v = format!("v{i}");
        store
            .put(&config(), "p", v.into_bytes(), Attrs::new())
            .unwrap();
        store
            .put(&config(), "other", b"o".to_vec(), Attrs::new())
            .unwrap();
    }
    let values = |offset, limit| -> Vec<String> {
        let page = store.history(&config(), "p", offset, limit).unwrap();
        assert_eq!(page.total, 7);
        page.records
            .into_iter()
            .map(|r| String::from_utf8(r.value).unwrap())
            .collect()
    };
    assert_eq!(values(0, 3), ["v7", "v6", "v5"]);
    assert_eq!(values(3, 3), ["v4", "v3", "v2"]);
    assert_eq!(values(6, 3), ["v1"]);
    assert_eq!(values(9, 3), Vec::<String>::new());
    let all = store.history(&config(), "p", 0, 100).unwrap().records;
    let previous = store
        .history_previous(&config(), "p", all[0].id)
        .unwrap()
        .expect("v6 came before v7");
    assert_eq!(
        previous, all[1],
        "the same key's, skipping other keys' records"
    );
    assert_eq!(
        store.history_previous(&config(), "p", all[6].id).unwrap(),
        None,
        "nothing before the first"
    );
    // By id even when the record itself is gone.
    assert_eq!(
        store
            .history_previous(&config(), "p", u64::MAX)
            .unwrap()
            .as_ref(),
        Some(&all[0])
    );
}

fn history_prune(store: &dyn KvStore) {
    store
        .put(&config(), "a", b"1".to_vec(), Attrs::new())
        .unwrap();
    store
        .put(&config(), "a", b"2".to_vec(), Attrs::new())
        .unwrap();
    let newest = store.history(&config(), "a", 0, 10).unwrap().records;
    let cutoff = newest[0].at_ms;
    assert_eq!(
        store.prune_history(newest[1].at_ms).unwrap(),
        0,
        "nothing older"
    );
    let pruned = store.prune_history(cutoff + 1).unwrap();
    assert_eq!(pruned, 2);
    assert_eq!(store.history(&config(), "a", 0, 10).unwrap().total, 0);
    assert_eq!(
        store.get(&config(), "a").unwrap().unwrap().value,
        b"2",
        "entries are never pruned"
    );
    // Ids are never reused after a prune.
    store
        .put(&config(), "a", b"3".to_vec(), Attrs::new())
        .unwrap();
    let after = store.history(&config(), "a", 0, 10).unwrap().records;
    assert!(after[0].id > newest[0].id);
}

/// The next change on `feed`, waiting up to five seconds (engines may deliver from
/// another thread).
fn recv(feed: &mut broadcast::Receiver<Change>) -> Change {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), feed.recv()).await })
        .expect("a change within 5 s")
        .expect("the feed is open")
}

/// The next change after index `after`, skipping older ones (an engine that delivers
/// from another thread may still be delivering writes made before the subscription).
fn recv_after(feed: &mut broadcast::Receiver<Change>, after: u64) -> Change {
    loop {
        let change = recv(feed);
        if change.index() > after {
            return change;
        }
    }
}

fn change_feed_delivers_changes_with_their_index(store: &dyn KvStore) {
    let mut feed = store.subscribe();
    let e = store.put(&kv(), "a", b"1".to_vec(), Attrs::new()).unwrap();
    let outcome = run(
        store,
        Txn::new(config())
            .op(Op::put("x", "1"))
            .op(Op::put("y", "1"))
            .op(Op::put("x", "2"))
            .op(Op::delete_prefix("old/")),
    )
    .committed()
    .unwrap();
    store
        .put(&config(), "old/1", b"1".to_vec(), Attrs::new())
        .unwrap();
    let deleted = run(store, Txn::new(config()).op(Op::delete_prefix("old/")))
        .committed()
        .unwrap();
    assert_eq!(
        recv(&mut feed),
        Change::Written {
            index: e.modify_index,
            space: kv(),
            keys: vec!["a".into()],
            prefixes: vec![],
        }
    );
    let second = recv(&mut feed);
    assert_eq!(
        second,
        Change::Written {
            index: outcome.index,
            space: config(),
            keys: vec!["x".into(), "y".into()],
            prefixes: vec![],
        },
        "each key once; a prefix that deleted nothing is no change"
    );
    assert!(second.affects(&config(), "x"));
    assert!(!second.affects(&kv(), "x"), "another space");
    assert!(!second.affects(&config(), "z"));
    assert_eq!(recv(&mut feed).index(), outcome.index + 1);
    let prefix = recv(&mut feed);
    assert_eq!(
        prefix,
        Change::Written {
            index: deleted.index,
            space: config(),
            keys: vec![],
            prefixes: vec!["old/".into()],
        }
    );
    assert!(prefix.affects(&config(), "old/anything"));
    // Failed and empty transactions announce nothing: the next change is the next write.
    run(store, Txn::new(kv()).op(Op::put_if("a", "x", Cond::Absent)));
    run(store, Txn::new(kv()).op(Op::get("a")));
    let last = store.put(&kv(), "b", b"1".to_vec(), Attrs::new()).unwrap();
    assert_eq!(recv(&mut feed).index(), last.modify_index);
}

fn watch_index_advances(store: &dyn KvStore) {
    let mut watch = store.watch_index();
    let start = *watch.borrow_and_update();
    assert_eq!(start, store.current_index());
    let e = store.put(&kv(), "a", b"1".to_vec(), Attrs::new()).unwrap();
    // A writer sees its own write in the watch at once, whatever the engine.
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), e.modify_index);
    assert_eq!(store.current_index(), e.modify_index);
    store.put(&kv(), "a", b"2".to_vec(), Attrs::new()).unwrap();
    store.put(&kv(), "a", b"3".to_vec(), Attrs::new()).unwrap();
    // A slow reader skips to the newest index; it never sees an older one.
    assert_eq!(*watch.borrow_and_update(), e.modify_index + 2);
}

/// `threads` threads each make `per_thread` increments of one counter by compare-and-set
/// (read, put with the read's modify index, retry on conflict), thread `i` on
/// `stores[i % len]`. Every acknowledged increment must survive: the counter ends at the
/// total, and the values written are exactly 1..=total, each once.
pub fn concurrent_cas_increments(stores: Vec<Arc<dyn KvStore>>, threads: usize, per_thread: u64) {
    let key = "counter";
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            std::thread::spawn(move || {
                let mut written = Vec::new();
                let mut conflicts = 0u64;
                while (written.len() as u64) < per_thread {
                    let current = store.get(&kv(), key).unwrap();
                    let (n, index) = current.map_or((0, 0), |e| {
                        let n: u64 = String::from_utf8(e.value).unwrap().parse().unwrap();
                        (n, e.modify_index)
                    });
                    let txn = Txn::new(kv()).op(Op::put_if(
                        key,
                        (n + 1).to_string(),
                        Cond::ModifyIndex(index),
                    ));
                    match store.txn(&txn).unwrap() {
                        TxnOutcome::Committed(c) => written.push((n + 1, c.index)),
                        TxnOutcome::Failed(_) => conflicts += 1,
                    }
                }
                (written, conflicts)
            })
        })
        .collect();
    let mut values = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    let mut conflicts = 0;
    for h in handles {
        let (written, c) = h.join().expect("a CAS thread panicked");
        conflicts += c;
        for (value, index) in written {
            assert!(values.insert(value), "value {value} was written twice");
            assert!(indexes.insert(index), "index {index} was used twice");
        }
    }
    let total = threads as u64 * per_thread;
    assert_eq!(values, (1..=total).collect::<BTreeSet<_>>());
    for store in &stores {
        let n = store.get(&kv(), key).unwrap().unwrap().value;
        assert_eq!(String::from_utf8(n).unwrap(), total.to_string());
    }
    eprintln!("{total} increments by CAS, {conflicts} conflicts retried");
}
