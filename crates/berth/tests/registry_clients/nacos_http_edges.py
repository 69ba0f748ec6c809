"""Raw Nacos v1 requests the SDK does not make: form bodies on any method, booleans in any
case, beats without a body for unknown instances, services, metrics, bad parameters."""
import json
import sys
import urllib.parse

from common import http

addr = sys.argv[1]
form = {"Content-Type": "application/x-www-form-urlencoded"}

def enc(**kw):
    return urllib.parse.urlencode(kw).encode()

# Form body on POST, booleans in odd case.
st, _, body = http(addr, "POST", "/nacos/v1/ns/instance",
                   enc(serviceName="api", ip="127.0.0.1", port="81", ephemeral="TRUE", healthy="False"), form)
assert (st, body) == (200, "ok"), (st, body)
st, _, body = http(addr, "GET", "/nacos/v1/ns/instance/list?serviceName=api")
hs = json.loads(body)["hosts"]
assert len(hs) == 1 and hs[0]["healthy"] is False and hs[0]["clusterName"] == "DEFAULT", hs
st, _, body = http(addr, "GET", "/nacos/v1/ns/instance/list?serviceName=api&healthyOnly=true")
assert json.loads(body)["hosts"] == []

# Beat without a body for an unknown instance: 20404, exactly.
st, _, body = http(addr, "PUT", "/nacos/v1/ns/instance/beat?serviceName=api&ip=127.0.0.9&port=1")
assert st == 200 and json.loads(body) == {"clientBeatInterval": 5000, "code": 20404}, body

# Services.
st, _, body = http(addr, "POST", "/nacos/v1/ns/service", enc(serviceName="billing", metadata="team=pay", protectThreshold="0.5"), form)
assert (st, body) == (200, "ok"), (st, body)
st, _, body = http(addr, "GET", "/nacos/v1/ns/service?serviceName=billing")
svc = json.loads(body)
assert svc["name"] == "billing" and svc["metadata"] == {"team": "pay"} and svc["protectThreshold"] == 0.5, svc
st, _, body = http(addr, "PUT", "/nacos/v1/ns/service?serviceName=billing&metadata=" + urllib.parse.quote('{"team":"ops"}'))
assert st == 200, body
st, _, body = http(addr, "GET", "/nacos/v1/ns/service/list?pageNo=1&pageSize=10")
doms = json.loads(body)
assert doms["count"] >= 2 and "billing" in doms["doms"] and "api" in doms["doms"], doms
st, _, body = http(addr, "POST", "/nacos/v1/ns/service", enc(serviceName="billing"), form)
assert st == 400 and "already exists" in body, (st, body)
st, _, body = http(addr, "DELETE", "/nacos/v1/ns/service?serviceName=api")
assert st == 400 and "still has instances" in body, (st, body)
st, _, body = http(addr, "DELETE", "/nacos/v1/ns/service?serviceName=billing")
assert (st, body) == (200, "ok"), (st, body)

# Operator metrics.
st, _, body = http(addr, "GET", "/nacos/v1/ns/operator/metrics")
m = json.loads(body)
assert m["status"] == "UP" and m["instanceCount"] >= 1 and m["serviceCount"] >= 1, m

# Bad parameters: 400 naming the parameter.
for path, name in [
    ("/nacos/v1/ns/instance?ip=1.2.3.4&port=80", "serviceName"),
    ("/nacos/v1/ns/instance?serviceName=a&port=80", "ip"),
    ("/nacos/v1/ns/instance?serviceName=a&ip=1.2.3.4&port=99999", "port"),
    ("/nacos/v1/ns/instance?serviceName=a&ip=1.2.3.4&port=80&healthy=maybe", "healthy"),
    ("/nacos/v1/ns/instance?serviceName=a&ip=1.2.3.4&port=80&weight=abc", "weight"),
    ("/nacos/v1/ns/instance?serviceName=a&ip=1.2.3.4&port=80&metadata=%7Bbroken", "metadata"),
    ("/nacos/v1/ns/instance?serviceName=a&ip=1.2.3.4&port=80&clusterName=a%20b", "clusterName"),
]:
    st, _, body = http(addr, "POST", path)
    assert st == 400 and ("'%s'" % name) in body, (path, st, body)
st, _, body = http(addr, "PUT", "/nacos/v1/ns/instance/beat?serviceName=a&beat=%7Bnope")
assert st == 400 and "'beat'" in body, body

# Oversized body: refused, the registry keeps serving.
st, _, body = http(addr, "POST", "/nacos/v1/ns/instance", b"x=" + b"a" * (2 * 1024 * 1024), form)
assert st == 413, (st, body)
st, _, body = http(addr, "GET", "/nacos/v1/ns/instance/list?serviceName=api")
assert st == 200 and len(json.loads(body)["hosts"]) == 1
print("OK")
