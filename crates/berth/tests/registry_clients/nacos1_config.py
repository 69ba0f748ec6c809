"""nacos-sdk-python 1.0.0 against the config center: publish, get, remove, a watcher hearing
every change (deletion included), then raw HTTP for what the SDK does not do: history
with author and source address, the v2 open API and its error shapes, long-poll edges,
bad names and oversized content. The registry runs with --config-max-content 4096."""
import hashlib
import json
import os
import sys
import tempfile
import time
import urllib.parse

import nacos

from common import http, metric, wait_until

addr = sys.argv[1]
LIMIT = 4096
os.chdir(tempfile.mkdtemp())  # the SDK keeps snapshots in ./nacos-data
form = {"Content-Type": "application/x-www-form-urlencoded"}


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def q(**kw):
    return urllib.parse.urlencode(kw)


def v2(method, path, **kw):
    st, _, body = http(addr, method, path + "?" + q(**kw))
    return st, json.loads(body)


# --- The SDK: publish, get, watch, remove.
c = nacos.NacosClient(addr, namespace="")
c.set_options(pulling_timeout=2)
assert c.get_config("app.yaml", "DEFAULT_GROUP") is None
events = []
c.add_config_watcher("app.yaml", "DEFAULT_GROUP", lambda p: events.append(p["content"]))
started = time.monotonic()
assert c.publish_config("app.yaml", "DEFAULT_GROUP", "a: 1", config_type="yaml") is True
wait_until("the watcher hears the first publish", lambda: events == ["a: 1"], timeout=2.5)
heard_in = time.monotonic() - started
assert c.publish_config("app.yaml", "DEFAULT_GROUP", "a: 2\nb: 3", config_type="yaml") is True
wait_until("the watcher hears the second publish", lambda: events[-1:] == ["a: 2\nb: 3"], timeout=2.5)
assert c.get_config("app.yaml", "DEFAULT_GROUP") == "a: 2\nb: 3"

st, headers, body = http(addr, "GET", "/nacos/v1/cs/configs?dataId=app.yaml&group=DEFAULT_GROUP")
h = {k.lower(): v for k, v in headers.items()}
assert (st, body) == (200, "a: 2\nb: 3"), (st, body)
assert h["content-md5"] == md5("a: 2\nb: 3") and h["config-type"] == "yaml", h
assert h["last-modified"].endswith("GMT") and h["cache-control"] == "no-cache,no-store", h

assert c.remove_config("app.yaml", "DEFAULT_GROUP") is True
wait_until("the watcher hears the deletion", lambda: events[-1:] == [None], timeout=2.5)
assert events == ["a: 1", "a: 2\nb: 3", None], events
st, _, body = http(addr, "GET", "/nacos/v1/cs/configs?dataId=app.yaml&group=DEFAULT_GROUP")
assert (st, body) == (404, "config data not exist\n"), (st, body)
assert c.remove_config("app.yaml", "DEFAULT_GROUP") is True, "deleting nothing is true too"

# The SDK's listing (search=accurate).
assert c.publish_config("db.properties", "DEFAULT_GROUP", "url=x") is True
page = c.get_configs()
assert page["totalCount"] == 1 and page["pageItems"][0]["dataId"] == "db.properties", page
assert page["pageItems"][0]["id"].isdigit(), page
st, _, body = http(addr, "GET", "/nacos/v1/cs/configs?" + q(search="blur", dataId="db", pageNo=1, pageSize=10))
assert json.loads(body)["totalCount"] == 1, body

# --- History through raw HTTP: author (src_user) and source address kept.
st, _, body = http(addr, "POST", "/nacos/v1/cs/configs",
                   q(dataId="h.yaml", group="G", content="v: 1", src_user="alice").encode(), form)
assert (st, body) == (200, "true"), (st, body)
st, _, body = http(addr, "POST", "/nacos/v1/cs/configs?" + q(dataId="h.yaml", group="G", content="v: 2", src_user="bob"))
assert (st, body) == (200, "true"), (st, body)
st, _, body = http(addr, "GET", "/nacos/v1/cs/history?" + q(search="accurate", dataId="h.yaml", group="G", pageNo=1, pageSize=10))
page = json.loads(body)
items = page["pageItems"]
assert st == 200 and page["totalCount"] == 2, body
assert [i["opType"] for i in items] == ["U", "I"], items
assert [i["srcUser"] for i in items] == ["bob", "alice"], items
assert all(i["srcIp"] == "127.0.0.1" and isinstance(i["id"], str) for i in items), items
newest, oldest = items[0]["id"], items[1]["id"]
st, _, body = http(addr, "GET", "/nacos/v1/cs/history?" + q(nid=newest, dataId="h.yaml", group="G"))
assert json.loads(body)["content"] == "v: 2", body
st, _, body = http(addr, "GET", "/nacos/v1/cs/history?" + q(nid=newest, dataId="other", group="G"))
assert st == 403, (st, body)
st, _, body = http(addr, "GET", "/nacos/v1/cs/history/previous?" + q(id=newest, dataId="h.yaml", group="G"))
assert json.loads(body)["content"] == "v: 1", body

# --- v2 open API.
st, a = v2("POST", "/nacos/v2/cs/config", dataId="v2.json", group="G", namespaceId="dev", content='{"x":1}', type="json", srcUser="carol")
assert (st, a) == (200, {"code": 0, "message": "success", "data": True}), (st, a)
st, a = v2("GET", "/nacos/v2/cs/config", dataId="v2.json", group="G", namespaceId="dev")
assert (st, a["data"]) == (200, '{"x":1}'), a
st, a = v2("GET", "/nacos/v2/cs/config", dataId="v2.json", group="G")
assert (st, a["code"], a["data"]) == (404, 20004, "config data not exist"), (st, a)
st, a = v2("GET", "/nacos/v2/cs/config", group="G")
assert (st, a["code"]) == (400, 10000) and "'dataId'" in a["data"], (st, a)
st, a = v2("POST", "/nacos/v2/cs/config", dataId="a/b", content="x")
assert (st, a["code"]) == (400, 20002) and "'dataId'" in a["data"], (st, a)
st, a = v2("POST", "/nacos/v2/cs/config", dataId="a", namespaceId="no space", content="x")
assert st == 400 and "'namespaceId'" in a["data"], (st, a)
st, a = v2("POST", "/nacos/v2/cs/config", dataId="v2.json", group="G", namespaceId="dev")
assert (st, a["code"]) == (400, 10000) and "'content'" in a["data"], (st, a)
# Compare-and-set: the header Nacos clients send; a mismatch names the current md5.
st, _, body = http(addr, "POST", "/nacos/v2/cs/config?" + q(dataId="v2.json", group="G", namespaceId="dev", content="{}"),
                   headers={"casMd5": "0" * 32})
a = json.loads(body)
assert (st, a["code"]) == (500, 20005) and md5('{"x":1}') in a["data"], (st, a)
st, _, body = http(addr, "POST", "/nacos/v2/cs/config?" + q(dataId="v2.json", group="G", namespaceId="dev", content="{}"),
                   headers={"casMd5": md5('{"x":1}')})
assert st == 200, body
st, a = v2("GET", "/nacos/v2/cs/history/list", dataId="v2.json", group="G", namespaceId="dev")
hist = a["data"]["pageItems"]
assert a["data"]["totalCount"] == 2 and hist[1]["srcUser"] == "carol" and hist[0]["tenant"] == "dev", a
st, a = v2("GET", "/nacos/v2/cs/history", nid=hist[1]["id"], dataId="v2.json", group="G", namespaceId="dev")
assert a["data"]["content"] == '{"x":1}', a
st, a = v2("GET", "/nacos/v2/cs/history", nid="999999", dataId="v2.json", group="G", namespaceId="dev")
assert (st, a["code"]) == (404, 20004), (st, a)
st, a = v2("GET", "/nacos/v2/cs/history/previous", id=hist[0]["id"], dataId="v2.json", group="G", namespaceId="dev")
assert a["data"]["content"] == '{"x":1}', a
st, a = v2("POST", "/nacos/v2/cs/history/rollback", nid=hist[1]["id"], dataId="v2.json", group="G", namespaceId="dev")
assert (st, a["data"]) == (200, True), (st, a)
st, a = v2("GET", "/nacos/v2/cs/config", dataId="v2.json", group="G", namespaceId="dev")
assert a["data"] == '{"x":1}', a
st, a = v2("DELETE", "/nacos/v2/cs/config", dataId="v2.json", group="G", namespaceId="dev")
assert (st, a["data"]) == (200, True), (st, a)

# --- Long polling by hand: a stale md5 answers at once, echoing the tenant as sent;
# a current one is held about as long as the client asked, then answered empty.
listen = "/nacos/v1/cs/configs/listener"
probe = q(**{"Listening-Configs": "h.yaml\x02G\x02stale\x02\x01db.properties\x02DEFAULT_GROUP\x02%s\x02\x01" % md5("url=x")})
st, _, body = http(addr, "POST", listen, probe.encode(), dict(form, **{"Long-Pulling-Timeout": "30000"}))
assert (st, body) == (200, "h.yaml%02G%01\n"), (st, body)
probe = q(**{"Listening-Configs": "gone\x02G\x02abc\x02public\x01"})
st, _, body = http(addr, "POST", listen, probe.encode(), dict(form, **{"Long-Pulling-Timeout": "30000"}))
assert body == "gone%02G%02public%01\n", body
probe = q(**{"Listening-Configs": "db.properties\x02DEFAULT_GROUP\x02%s\x01" % md5("url=x")})
t0 = time.monotonic()
st, headers, body = http(addr, "POST", listen, probe.encode(), dict(form, **{"Long-Pulling-Timeout": "1000"}))
held = time.monotonic() - t0
assert (st, body) == (200, "") and 1.0 <= held < 3.0, (st, body, held)
st, _, body = http(addr, "POST", listen, probe.encode(),
                   dict(form, **{"Long-Pulling-Timeout": "30000", "Long-Pulling-Timeout-No-Hangup": "true"}))
assert (st, body) == (200, ""), (st, body)
for bad in ["nothing-terminated", "a\x02b\x01", "a\x02b\x02c\x02d\x02e\x01"]:
    st, _, body = http(addr, "POST", listen, q(**{"Listening-Configs": bad}).encode(), form)
    assert st == 400 and "'Listening-Configs'" in body, (bad, st, body)

# --- Bad names and oversized content.
try:
    c.publish_config("a b", "DEFAULT_GROUP", "x")
    raise AssertionError("the SDK let a bad dataId through")
except nacos.exception.NacosException:
    pass
st, _, body = http(addr, "POST", "/nacos/v1/cs/configs?" + q(dataId="a/b", content="x"))
assert st == 400 and "'dataId'" in body, (st, body)
st, _, body = http(addr, "POST", "/nacos/v1/cs/configs?" + q(dataId="a", group="g g", content="x"))
assert st == 400 and "'group'" in body, (st, body)
st, _, body = http(addr, "POST", "/nacos/v1/cs/configs?" + q(dataId="a", content="  "))
assert st == 400 and "content" in body, (st, body)
big = "x" * (LIMIT + 1)
try:
    c.publish_config("big.txt", "DEFAULT_GROUP", big)
    raise AssertionError("oversized content was accepted")
except nacos.exception.NacosException as e:
    assert "400" in str(e), e
st, _, body = http(addr, "POST", "/nacos/v1/cs/configs", q(dataId="big.txt", content=big).encode(), form)
assert st == 400 and str(LIMIT) in body and "config_max_content" in body, (st, body)
assert c.get_config("big.txt", "DEFAULT_GROUP") is None

# --- Metrics.
assert metric(addr, "berth_registry_configs") == 2, "db.properties and h.yaml"
assert metric(addr, "berth_registry_config_publishes_total") >= 8
assert metric(addr, "berth_registry_config_listener_wakeups_total") >= 3
wait_until("the SDK's watcher waiting", lambda: metric(addr, "berth_registry_config_listeners") >= 1)
print("first change heard after %.2f s" % heard_in)
print("OK")
