"""py-consul against the registry's Consul KV, transactions and sessions: put/get/cas,
recurse, keys with a separator, flags, raw, deletes, blocking reads that wake on a
change and hold otherwise, transactions (committed, and a failing check that writes
nothing), sessions and locks (contention, release, TTL expiry freeing a lock, behavior
delete, lock delay), and bad input."""
import base64
import json
import sys
import threading
import time

import consul

from common import http

addr = sys.argv[1]
host, port = addr.rsplit(":", 1)
c = consul.Consul(host=host, port=int(port))

# Put, get, flags, cas, raw.
assert c.kv.put("app/config/db", "postgres://x") is True
idx, e = c.kv.get("app/config/db")
assert int(idx) > 0 and e["Value"] == b"postgres://x" and e["Flags"] == 0 and e["LockIndex"] == 0, e
assert "Session" not in e and e["CreateIndex"] == e["ModifyIndex"], e
assert c.kv.get("app/missing") == (c.kv.get("app/missing")[0], None)
assert c.kv.put("app/config/flagged", "v", flags=42) is True
assert c.kv.get("app/config/flagged")[1]["Flags"] == 42
assert c.kv.put("app/config/db", "other", cas=0) is False
assert c.kv.put("app/config/db", "other", cas=e["ModifyIndex"] + 1000) is False
assert c.kv.put("app/config/db", "v2", cas=e["ModifyIndex"]) is True
_, e2 = c.kv.get("app/config/db")
assert e2["Value"] == b"v2" and e2["ModifyIndex"] > e["ModifyIndex"] and e2["CreateIndex"] == e["CreateIndex"], e2
assert c.kv.put("app/new", "n", cas=0) is True
assert c.kv.put("app/empty", "") is True
assert c.kv.get("app/empty")[1]["Value"] is None
status, headers, body = http(addr, "GET", "/v1/kv/app/config/db?raw")
assert status == 200 and body == "v2" and int(headers["X-Consul-Index"]) > 0, (status, headers, body)
status, headers, _ = http(addr, "GET", "/v1/kv/app/nope")
assert status == 404 and int(headers["X-Consul-Index"]) > 0, (status, headers)

# Recurse and keys with a separator.
_, entries = c.kv.get("app/", recurse=True)
assert [x["Key"] for x in entries] == ["app/config/db", "app/config/flagged", "app/empty", "app/new"], entries
_, keys = c.kv.get("app/", keys=True, separator="/")
assert keys == ["app/config/", "app/empty", "app/new"], keys
_, keys = c.kv.get("app/", keys=True)
assert len(keys) == 4, keys
assert c.kv.get("zzz/", recurse=True)[1] is None

# Deletes: one, cas, recurse.
assert c.kv.delete("app/new") is True
assert c.kv.get("app/new")[1] is None
_, e = c.kv.get("app/empty")
assert c.kv.delete("app/empty", cas=e["ModifyIndex"] + 1000) is False
assert c.kv.get("app/empty")[1] is not None
assert c.kv.delete("app/empty", cas=e["ModifyIndex"]) is True
c.kv.put("tree/a", "1")
c.kv.put("tree/b/c", "2")
c.kv.put("treetop", "3")
assert c.kv.delete("tree/", recurse=True) is True
assert c.kv.get("tree/", recurse=True)[1] is None and c.kv.get("treetop")[1] is not None

# Blocking reads: hold without a change (even with writes elsewhere), wake on one.
idx, _ = c.kv.get("watched")
c.kv.put("unrelated", "x")
idx, _ = c.kv.get("watched")
start = time.monotonic()
got = c.kv.get("watched", index=idx, wait="1s")
held = time.monotonic() - start
assert held >= 0.9 and got[1] is None, (held, got)


def later(key, value, delay=0.3):
    def run():
        time.sleep(delay)
        consul.Consul(host=host, port=int(port)).kv.put(key, value)
    t = threading.Thread(target=run)
    t.start()
    return t


t = later("watched", "now")
start = time.monotonic()
idx2, e = c.kv.get("watched", index=idx, wait="10s")
woke = time.monotonic() - start
t.join()
assert woke < 1.0 and e["Value"] == b"now" and int(idx2) > int(idx), (woke, e)
# A prefix watch wakes on a key below it, not on one beside it.
idx, _ = c.kv.get("dir/", recurse=True)
t = later("dirx", "beside", 0.1)
t2 = later("dir/sub/k", "below", 0.6)
start = time.monotonic()
_, entries = c.kv.get("dir/", recurse=True, index=idx, wait="10s")
woke = time.monotonic() - start
t.join(); t2.join()
assert 0.5 < woke < 1.5 and entries[0]["Key"] == "dir/sub/k", (woke, entries)


def b64(s):
    return base64.b64encode(s.encode()).decode()


# Transactions.
r = c.txn.put([
    {"KV": {"Verb": "set", "Key": "txn/a", "Value": b64("1"), "Flags": 7}},
    {"KV": {"Verb": "set", "Key": "txn/b", "Value": b64("2")}},
    {"KV": {"Verb": "get", "Key": "app/config/db"}},
    {"KV": {"Verb": "check-not-exists", "Key": "txn/c"}},
])
assert r["Errors"] is None and len(r["Results"]) == 3, r
assert r["Results"][0]["KV"]["Key"] == "txn/a" and r["Results"][0]["KV"]["Flags"] == 7 and r["Results"][0]["KV"]["Value"] is None, r
assert base64.b64decode(r["Results"][2]["KV"]["Value"]) == b"v2", r
a_index = r["Results"][0]["KV"]["ModifyIndex"]
r = c.txn.put([{"KV": {"Verb": "get-tree", "Key": "txn/"}}, {"KV": {"Verb": "check-index", "Key": "txn/a", "Index": a_index}}])
assert [x["KV"]["Key"] for x in r["Results"]] == ["txn/a", "txn/b", "txn/a"], r
try:
    c.txn.put([
        {"KV": {"Verb": "set", "Key": "txn/should-not-exist", "Value": b64("x")}},
        {"KV": {"Verb": "delete", "Key": "txn/a"}},
        {"KV": {"Verb": "check-index", "Key": "txn/b", "Index": 1}},
    ])
    raise AssertionError("a failing check must fail the transaction")
except consul.exceptions.ClientError as err:
    assert "409" in str(err), err
    body = json.loads(str(err).split(" ", 1)[1])
    assert body["Results"] is None and body["Errors"][0]["OpIndex"] == 2, body
assert c.kv.get("txn/should-not-exist")[1] is None and c.kv.get("txn/a")[1] is not None
r = c.txn.put([{"KV": {"Verb": "delete-tree", "Key": "txn/"}}])
assert r["Results"] == [] or r["Results"] is None, r
assert c.kv.get("txn/", recurse=True)[1] is None
status, _, body = http(addr, "PUT", "/v1/txn", json.dumps([{"KV": {"Verb": "fly", "Key": "a"}}]).encode())
assert status == 400 and "op 0" in body and "Verb" in body, (status, body)

# Sessions.
s1 = c.session.create(name="one", lock_delay=0)
s2 = c.session.create(name="two", lock_delay=0)
_, info = c.session.info(s1)
assert info["ID"] == s1 and info["Name"] == "one" and info["Node"] == "berth" and info["Behavior"] == "release", info
assert info["NodeChecks"] == ["serfHealth"], info
_, all_sessions = c.session.list()
assert {s1, s2} <= {x["ID"] for x in all_sessions}, all_sessions
_, on_node = c.session.node("berth")
assert {s1, s2} <= {x["ID"] for x in on_node}
assert c.session.info("00000000-0000-0000-0000-00000000dead")[1] is None

# Locks: acquire, contention, re-acquire, release.
assert c.kv.put("lock/leader", "me", acquire=s1) is True
_, e = c.kv.get("lock/leader")
assert e["Session"] == s1 and e["LockIndex"] == 1 and e["Value"] == b"me", e
assert c.kv.put("lock/leader", "you", acquire=s2) is False
assert c.kv.put("lock/leader", "me again", acquire=s1) is True
assert c.kv.get("lock/leader")[1]["LockIndex"] == 1
assert c.kv.put("lock/leader", "x", release=s2) is False
assert c.kv.put("lock/leader", "bye", release=s1) is True
_, e = c.kv.get("lock/leader")
assert "Session" not in e and e["LockIndex"] == 1, e
assert c.kv.put("lock/leader", "you", acquire=s2) is True
assert c.kv.get("lock/leader")[1]["LockIndex"] == 2
# Destroying the holder releases its lock.
assert c.session.destroy(s2) is True
assert "Session" not in c.kv.get("lock/leader")[1]
assert c.session.info(s2)[1] is None
# Lock and unlock in a transaction.
r = c.txn.put([{"KV": {"Verb": "lock", "Key": "lock/txn", "Value": b64("t"), "Session": s1}}])
assert r["Results"][0]["KV"]["Session"] == s1, r
r = c.txn.put([{"KV": {"Verb": "check-session", "Key": "lock/txn", "Session": s1}},
               {"KV": {"Verb": "unlock", "Key": "lock/txn", "Session": s1}}])
assert "Session" not in r["Results"][1]["KV"], r

# Lock delay: a lock released by invalidation cannot be taken again at once.
s3 = c.session.create(lock_delay=5)
assert c.kv.put("lock/delayed", "x", acquire=s3) is True
c.session.destroy(s3)
assert c.kv.put("lock/delayed", "y", acquire=s1) is False

# Behavior delete deletes the key.
s4 = c.session.create(behavior="delete", lock_delay=0)
assert c.kv.put("lock/ephemeral", "x", acquire=s4) is True
c.session.destroy(s4)
assert c.kv.get("lock/ephemeral")[1] is None

# Renew.
s5 = c.session.create(ttl=10, lock_delay=0)
renewed = c.session.renew(s5)
assert renewed["ID"] == s5 and renewed["TTL"] == "10s", renewed

# A TTL session that is not renewed expires (at twice the TTL) and frees its lock.
s6 = c.session.create(ttl=10, lock_delay=0)
assert c.kv.put("lock/ttl", "x", acquire=s6) is True
start = time.monotonic()
while c.kv.get("lock/ttl")[1].get("Session") == s6:
    assert time.monotonic() - start < 30, "the TTL session never expired"
    c.session.renew(s5)
    time.sleep(0.5)
expired_after = time.monotonic() - start
assert 15 < expired_after < 25, expired_after
assert c.session.info(s6)[1] is None
# The renewed one lives on.
assert c.session.info(s5)[1] is not None

# Bad input.
status, _, body = http(addr, "PUT", "/v1/session/create", json.dumps({"TTL": "5s"}).encode())
assert status == 400 and "TTL" in body, (status, body)
status, _, body = http(addr, "PUT", "/v1/session/create", json.dumps({"Behavior": "boom"}).encode())
assert status == 400 and "Behavior" in body, (status, body)
status, _, body = http(addr, "PUT", "/v1/session/renew/nope")
assert status == 404 and "nope" in body, (status, body)
status, _, body = http(addr, "PUT", "/v1/kv/k?flags=x", b"v")
assert status == 400 and "'flags'" in body, (status, body)
status, _, body = http(addr, "PUT", "/v1/kv/k?cas=-1", b"v")
assert status == 400 and "'cas'" in body, (status, body)
status, _, body = http(addr, "PUT", "/v1/kv/k?acquire=nope", b"v")
assert status == 500 and "session" in body, (status, body)
status, _, body = http(addr, "PUT", "/v1/kv//slash", b"v")
assert status == 400 and "'/'" in body, (status, body)
status, _, body = http(addr, "PUT", "/v1/kv/", b"v")
assert status == 400 and "Missing key" in body, (status, body)
status, _, body = http(addr, "PUT", "/v1/kv/big", b"x" * (512 * 1024 + 1))
assert status == 413 and "524288" in body, (status, body)
assert c.kv.put("big-ok", b"x" * (512 * 1024)) is True
status, _, body = http(addr, "GET", "/v1/kv/k?index=1&wait=soon")
assert status == 400 and "'wait'" in body, (status, body)

print("OK")
