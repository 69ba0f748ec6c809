//! The behaviour every [`Store`] implementation must have. An engine's tests call
//! [`run_all`] with a constructor of empty stores.

use std::time::Duration;

use berth_core::{AppId, AppSpec, Deployment, DeploymentId, DeploymentState, VersionId};

use berth_core::acl::Policy;

use crate::{AclToken, AppVersion, AuditFilter, AuditRecord, Change, Decision, Store, StoreError};

/// Runs every check, each on a fresh store from `fresh`. Panics on the first failure,
/// naming the check.
pub fn run_all(fresh: &dyn Fn() -> Box<dyn Store>) {
    create_get_list(fresh().as_ref());
    duplicate_create_is_refused(fresh().as_ref());
    updates_keep_every_version(fresh().as_ref());
    stale_update_is_refused(fresh().as_ref());
    update_of_missing_app_is_refused(fresh().as_ref());
    delete_removes_app_and_history(fresh().as_ref());
    leases_have_one_holder_at_a_time(fresh().as_ref());
    deployments_round_trip_and_update_in_place(fresh().as_ref());
    deployments_list_newest_first(fresh().as_ref());
    pruning_keeps_active_and_newest_finished(fresh().as_ref());
    policies_round_trip_replace_and_delete(fresh().as_ref());
    tokens_are_found_by_accessor_and_hash(fresh().as_ref());
    bootstrap_succeeds_once_unless_reset(fresh().as_ref());
    audit_entries_round_trip_and_take_their_outcome(fresh().as_ref());
    audit_listing_filters_and_pages_newest_first(fresh().as_ref());
    audit_prune_removes_only_older_entries_and_ids_stay_unique(fresh().as_ref());
}

fn spec(id: &str, instances: u32) -> AppSpec {
    let mut s = AppSpec::minimal(id, "sleep 1000");
    s.instances = instances;
    s
}

fn id(raw: &str) -> AppId {
    AppId::parse(raw).unwrap()
}

fn create_get_list(store: &dyn Store) {
    let a = AppVersion::first(spec("shop/web", 2), VersionId(1_000));
    let b = AppVersion::first(spec("alpha", 1), VersionId(2_000));
    store.create_app(&a).expect("create shop/web");
    store.create_app(&b).expect("create alpha");
    assert_eq!(store.get_app(&id("shop/web")).unwrap(), Some(a.clone()));
    assert_eq!(store.get_app(&id("nope")).unwrap(), None);
    let ids: Vec<_> = store
        .list_apps()
        .unwrap()
        .into_iter()
        .map(|v| v.spec.id.to_string())
        .collect();
    assert_eq!(ids, ["alpha", "shop/web"], "list_apps is ordered by id");
}

fn duplicate_create_is_refused(store: &dyn Store) {
    let a = AppVersion::first(spec("a", 1), VersionId(1_000));
    store.create_app(&a).unwrap();
    let again = AppVersion::first(spec("a", 5), VersionId(2_000));
    assert!(matches!(
        store.create_app(&again),
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.get_app(&id("a")).unwrap().unwrap().spec.instances, 1);
}

fn updates_keep_every_version(store: &dyn Store) {
    let v1 = AppVersion::first(spec("a", 1), VersionId(1_000));
    store.create_app(&v1).unwrap();
    let v2 = v1.next(spec("a", 3), VersionId(2_000), Change::Scaled);
    store.update_app(&v2, v1.version).unwrap();
    let mut changed = spec("a", 3);
    changed.cmd = Some("sleep 2000".into());
    let v3 = v2.next(changed, VersionId(3_000), Change::Updated);
    store.update_app(&v3, v2.version).unwrap();
    assert_eq!(v2.config_version, v1.version, "a scale keeps instances");
    assert_eq!(v3.config_version, v3.version, "a cmd change replaces them");
    assert_eq!(store.get_app(&id("a")).unwrap(), Some(v3.clone()));
    let versions = store.list_versions(&id("a")).unwrap();
    assert_eq!(versions, vec![v3, v2.clone(), v1], "newest first");
    assert_eq!(
        store.get_version(&id("a"), VersionId(2_000)).unwrap(),
        Some(v2)
    );
    assert_eq!(store.get_version(&id("a"), VersionId(9)).unwrap(), None);
}

fn stale_update_is_refused(store: &dyn Store) {
    let v1 = AppVersion::first(spec("a", 1), VersionId(1_000));
    store.create_app(&v1).unwrap();
    let v2 = v1.next(spec("a", 2), VersionId(2_000), Change::Scaled);
    store.update_app(&v2, v1.version).unwrap();
    let stale = v1.next(spec("a", 9), VersionId(3_000), Change::Scaled);
    assert!(matches!(
        store.update_app(&stale, v1.version),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.get_app(&id("a")).unwrap().unwrap().spec.instances, 2);
    assert_eq!(store.list_versions(&id("a")).unwrap().len(), 2);
}

fn update_of_missing_app_is_refused(store: &dyn Store) {
    let v = AppVersion::first(spec("ghost", 1), VersionId(1_000));
    assert!(matches!(
        store.update_app(&v, VersionId(1)),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.list_versions(&id("ghost")).unwrap().is_empty());
}

fn delete_removes_app_and_history(store: &dyn Store) {
    let v1 = AppVersion::first(spec("a", 1), VersionId(1_000));
    store.create_app(&v1).unwrap();
    store
        .create_app(&AppVersion::first(spec("b", 1), VersionId(1_500)))
        .unwrap();
    assert!(store.delete_app(&id("a")).unwrap());
    assert!(!store.delete_app(&id("a")).unwrap());
    assert_eq!(store.get_app(&id("a")).unwrap(), None);
    assert!(store.list_versions(&id("a")).unwrap().is_empty());
    assert_eq!(store.list_apps().unwrap().len(), 1, "other apps untouched");
    // The id can be reused and starts a fresh history.
    let again = AppVersion::first(spec("a", 4), VersionId(5_000));
    store.create_app(&again).unwrap();
    assert_eq!(store.list_versions(&id("a")).unwrap(), vec![again]);
}

fn leases_have_one_holder_at_a_time(store: &dyn Store) {
    let minute = Duration::from_secs(60);
    let a = store
        .acquire_lease("leader", "a", "reach a", minute)
        .unwrap();
    assert!(a.mine && a.holder == "a" && a.info == "reach a", "{a:?}");
    assert!(a.expires_in > Duration::from_secs(50), "{a:?}");
    // Held and valid: another candidate only learns who leads.
    let b = store
        .acquire_lease("leader", "b", "reach b", minute)
        .unwrap();
    assert!(!b.mine, "{b:?}");
    assert_eq!((b.holder.as_str(), b.info.as_str()), ("a", "reach a"));
    assert!(b.expires_in > Duration::ZERO);
    // The holder renews; other lease names are independent.
    assert!(
        store
            .acquire_lease("leader", "a", "reach a", minute)
            .unwrap()
            .mine
    );
    assert!(store.acquire_lease("other", "b", "", minute).unwrap().mine);
    // Releasing by a non-holder does nothing; by the holder frees it at once.
    store.release_lease("leader", "b").unwrap();
    assert!(
        !store
            .acquire_lease("leader", "b", "reach b", minute)
            .unwrap()
            .mine
    );
    store.release_lease("leader", "a").unwrap();
    let b = store
        .acquire_lease("leader", "b", "reach b", minute)
        .unwrap();
    assert!(b.mine && b.info == "reach b", "{b:?}");
    // An expired lease goes to the next candidate.
    assert!(
        store
            .acquire_lease("short", "a", "", Duration::ZERO)
            .unwrap()
            .mine
    );
    let c = store.acquire_lease("short", "c", "", minute).unwrap();
    assert!(c.mine, "an expired lease is free: {c:?}");
}

fn deployment(app: &str, version: u64, created_at_ms: u64) -> Deployment {
    use berth_core::deployment::{DeploymentKind, Target};
    Deployment::new(
        id(app),
        DeploymentKind::Update,
        Some(Target {
            version: VersionId(version - 1),
            config_version: VersionId(version - 1),
            instances: 2,
        }),
        Target {
            version: VersionId(version),
            config_version: VersionId(version),
            instances: 3,
        },
        true,
        60_000,
        created_at_ms,
    )
}

fn deployments_round_trip_and_update_in_place(store: &dyn Store) {
    let mut d = deployment("shop/web", 2_000, 10);
    store.put_deployment(&d).expect("put a deployment");
    assert_eq!(store.get_deployment(&d.id).unwrap(), Some(d.clone()));
    d.step(20, "new instance healthy (1/3)");
    d.progress.ready = 1;
    store.put_deployment(&d).expect("put it again");
    assert_eq!(
        store.get_deployment(&d.id).unwrap(),
        Some(d.clone()),
        "a second put replaces the first"
    );
    assert_eq!(store.list_deployments().unwrap().len(), 1);
    let missing = DeploymentId::parse("d-1").unwrap();
    assert_eq!(store.get_deployment(&missing).unwrap(), None);
}

fn deployments_list_newest_first(store: &dyn Store) {
    let a = deployment("a", 2_000, 10);
    let b = deployment("b", 3_000, 30);
    let c = deployment("a", 4_000, 20);
    for d in [&a, &b, &c] {
        store.put_deployment(d).unwrap();
    }
    let ids: Vec<_> = store
        .list_deployments()
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, vec![b.id, c.id, a.id]);
}

fn pruning_keeps_active_and_newest_finished(store: &dyn Store) {
    let mut all = Vec::new();
    for i in 0..5u64 {
        let mut d = deployment("a", 2_000 + i, 10 + i);
        if i != 1 {
            d.finish(DeploymentState::Succeeded, 100 + i, None);
        }
        store.put_deployment(&d).unwrap();
        all.push(d);
    }
    let other = deployment("b", 9_000, 1);
    store.put_deployment(&other).unwrap();
    // Finished: 0, 2, 3, 4; keep the newest two (4, 3); 1 is running.
    assert_eq!(store.prune_deployments(&id("a"), 2).unwrap(), 2);
    let mut left: Vec<_> = store
        .list_deployments()
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    left.sort();
    let mut want = vec![
        all[1].id.clone(),
        all[3].id.clone(),
        all[4].id.clone(),
        other.id.clone(),
    ];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(store.prune_deployments(&id("a"), 2).unwrap(), 0);
}

fn policy(name: &str, apps: &str) -> Policy {
    Policy::from_json(
        name,
        &format!(r#"{{"description":"d","rules":[{{"apps":"{apps}","capabilities":["read"]}}]}}"#),
    )
    .unwrap()
}

fn token(accessor: &str, hash: &str, at: u64) -> AclToken {
    AclToken {
        accessor_id: accessor.into(),
        secret_hash: hash.into(),
        name: format!("name of {accessor}"),
        policies: vec!["ro".into(), "ops".into()],
        create_time_ms: at,
        expiration_time_ms: None,
    }
}

fn policies_round_trip_replace_and_delete(store: &dyn Store) {
    store.put_policy(&policy("ro", "demo/*")).unwrap();
    store.put_policy(&policy("alpha", "*")).unwrap();
    assert_eq!(
        store.get_policy("ro").unwrap(),
        Some(policy("ro", "demo/*"))
    );
    assert_eq!(store.get_policy("nope").unwrap(), None);
    store.put_policy(&policy("ro", "prod/*")).unwrap();
    assert_eq!(
        store.get_policy("ro").unwrap(),
        Some(policy("ro", "prod/*")),
        "replaced"
    );
    let names: Vec<_> = store
        .list_policies()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["alpha", "ro"], "ordered by name");
    assert!(store.delete_policy("ro").unwrap());
    assert!(!store.delete_policy("ro").unwrap());
    assert_eq!(store.list_policies().unwrap().len(), 1);
}

fn tokens_are_found_by_accessor_and_hash(store: &dyn Store) {
    let mut a = token("acc-a", "hash-a", 2_000);
    a.expiration_time_ms = Some(9_000);
    let b = token("acc-b", "hash-b", 1_000);
    store.create_token(&a).unwrap();
    store.create_token(&b).unwrap();
    assert_eq!(store.get_token("acc-a").unwrap(), Some(a.clone()));
    assert_eq!(store.get_token_by_hash("hash-b").unwrap(), Some(b.clone()));
    assert_eq!(
        store.get_token_by_hash("acc-b").unwrap(),
        None,
        "hash, not accessor"
    );
    assert!(matches!(
        store.create_token(&token("acc-a", "hash-c", 3_000)),
        Err(StoreError::TokenExists(_))
    ));
    assert!(matches!(
        store.create_token(&token("acc-c", "hash-a", 3_000)),
        Err(StoreError::TokenExists(_))
    ));
    assert_eq!(
        store.list_tokens().unwrap(),
        vec![b, a.clone()],
        "oldest first"
    );
    assert!(store.delete_token("acc-b").unwrap());
    assert!(!store.delete_token("acc-b").unwrap());
    assert_eq!(
        store.get_token_by_hash("hash-b").unwrap(),
        None,
        "revoked at once"
    );
    assert_eq!(store.list_tokens().unwrap(), vec![a]);
}

fn bootstrap_succeeds_once_unless_reset(store: &dyn Store) {
    let mut first = token("boot-1", "h1", 1_000);
    first.policies = vec!["management".into()];
    assert!(store.bootstrap(&first, false).unwrap());
    assert_eq!(store.get_token("boot-1").unwrap(), Some(first));
    let second = token("boot-2", "h2", 2_000);
    assert!(!store.bootstrap(&second, false).unwrap(), "only once");
    assert_eq!(store.get_token("boot-2").unwrap(), None, "nothing stored");
    assert!(
        store.bootstrap(&second, true).unwrap(),
        "a reset allows one more"
    );
    assert!(store.get_token("boot-2").unwrap().is_some());
    let third = token("boot-3", "h3", 3_000);
    assert!(!store.bootstrap(&third, false).unwrap(), "and only one");
    // Revoking the bootstrap token does not reopen bootstrap.
    store.delete_token("boot-1").unwrap();
    store.delete_token("boot-2").unwrap();
    assert!(!store.bootstrap(&third, false).unwrap());
}

fn audit(time_ms: u64, accessor: Option<&str>, action: &str, target: Option<&str>) -> AuditRecord {
    AuditRecord {
        time_ms,
        accessor_id: accessor.map(str::to_string),
        token_name: accessor.map(|a| format!("name of {a}")),
        client: "127.0.0.1:40000".into(),
        action: action.into(),
        target: target.map(str::to_string),
        decision: Decision::Allowed,
        status: None,
        params: [("force".to_string(), "true".to_string())].into(),
    }
}

fn audit_entries_round_trip_and_take_their_outcome(store: &dyn Store) {
    let create = audit(1_000, Some("acc-a"), "app.create", Some("app:demo/web"));
    let mut refused = audit(2_000, None, "app.delete", Some("app:prod/db"));
    refused.decision = Decision::Denied;
    refused.status = Some(401);
    refused.params.clear();
    let first = store.append_audit(&create).unwrap();
    let second = store.append_audit(&refused).unwrap();
    assert!(second > first, "ids increase: {first} then {second}");
    let all = store.list_audit(&AuditFilter::default()).unwrap();
    let records: Vec<_> = all.iter().map(|e| e.record.clone()).collect();
    assert_eq!(records, vec![refused, create.clone()], "newest first");
    assert_eq!(all[1].id, first);
    assert_eq!(all[1].record.status, None, "no outcome before it is set");

    store.set_audit_outcome(first, 201).unwrap();
    let all = store.list_audit(&AuditFilter::default()).unwrap();
    assert_eq!(all[1].record.status, Some(201));
    assert_eq!(all[1].record.action, "app.create", "the rest is unchanged");
    assert!(matches!(
        store.set_audit_outcome(second + 100, 200),
        Err(StoreError::AuditEntryMissing(id)) if id == second + 100
    ));
}

fn audit_listing_filters_and_pages_newest_first(store: &dyn Store) {
    let entries = [
        audit(1_000, Some("acc-a"), "app.create", Some("app:demo/web")),
        audit(2_000, Some("acc-b"), "app.scale", Some("app:demo/api")),
        audit(3_000, Some("acc-a"), "acl.token.create", None),
        audit(4_000, Some("acc-a"), "app.scale", Some("app:prod/web")),
        audit(5_000, None, "app.scale", Some("app:demo")),
    ];
    let ids: Vec<u64> = entries
        .iter()
        .map(|e| store.append_audit(e).unwrap())
        .collect();
    let times = |f: AuditFilter| -> Vec<u64> {
        store
            .list_audit(&f)
            .unwrap()
            .into_iter()
            .map(|e| e.record.time_ms)
            .collect()
    };
    let all = AuditFilter::default();
    assert_eq!(times(all.clone()), [5_000, 4_000, 3_000, 2_000, 1_000]);
    assert_eq!(
        times(AuditFilter {
            since_ms: Some(2_000),
            until_ms: Some(4_000),
            ..all.clone()
        }),
        [3_000, 2_000],
        "since inclusive, until exclusive"
    );
    assert_eq!(
        times(AuditFilter {
            accessor_id: Some("acc-a".into()),
            ..all.clone()
        }),
        [4_000, 3_000, 1_000]
    );
    assert_eq!(
        times(AuditFilter {
            target_prefix: Some("app:demo/".into()),
            ..all.clone()
        }),
        [2_000, 1_000],
        "a prefix, not a pattern; no target never matches"
    );
    assert_eq!(
        times(AuditFilter {
            target_prefix: Some("app:demo%".into()),
            ..all.clone()
        }),
        Vec::<u64>::new(),
        "% is no wildcard"
    );
    assert_eq!(
        times(AuditFilter {
            action: Some("app.scale".into()),
            accessor_id: Some("acc-a".into()),
            ..all.clone()
        }),
        [4_000]
    );
    // Pages of two, each continuing below the last id of the one before.
    let page = AuditFilter {
        limit: 2,
        ..all.clone()
    };
    let first = store.list_audit(&page).unwrap();
    assert_eq!(
        first.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    let second = store
        .list_audit(&AuditFilter {
            before: Some(first[1].id),
            ..page.clone()
        })
        .unwrap();
    assert_eq!(
        second.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    let last = store
        .list_audit(&AuditFilter {
            before: Some(second[1].id),
            ..page
        })
        .unwrap();
    assert_eq!(last.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[0]]);
}

fn audit_prune_removes_only_older_entries_and_ids_stay_unique(store: &dyn Store) {
    for t in [1_000, 2_000, 3_000] {
        store
            .append_audit(&audit(t, Some("acc-a"), "app.create", None))
            .unwrap();
    }
    assert_eq!(
        store.prune_audit(2_000).unwrap(),
        1,
        "only the one before 2000"
    );
    let left: Vec<_> = store
        .list_audit(&AuditFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.record.time_ms)
        .collect();
    assert_eq!(left, [3_000, 2_000]);
    assert_eq!(store.prune_audit(2_000).unwrap(), 0);
    let highest = store.list_audit(&AuditFilter::default()).unwrap()[0].id;
    assert_eq!(store.prune_audit(10_000).unwrap(), 2);
    let next = store
        .append_audit(&audit(11_000, None, "app.create", None))
        .unwrap();
    assert!(next > highest, "an id is never reused after a prune");
}
