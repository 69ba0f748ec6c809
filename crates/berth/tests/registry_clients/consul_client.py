"""py-consul against the registry: agent register with TTL check, health with passing
and tag filters, blocking queries that wake on change and hold otherwise, catalog,
deregister, DeregisterCriticalServiceAfter."""
import sys
import threading
import time

import consul

from common import http, wait_until

host, port = sys.argv[1].rsplit(":", 1)
c = consul.Consul(host=host, port=int(port))

assert c.status.leader()
assert c.agent.self()["Config"]["Datacenter"] == "dc1"

# TTL check: critical until the client passes it.
c.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=8080,
                         tags=["v2", "urlprefix-web.example/"], meta={"Version": "2"},
                         check=consul.Check.ttl("10s"))
idx, nodes = c.health.service("web")
assert len(nodes) == 1 and int(idx) > 0, nodes
n = nodes[0]
assert n["Service"]["ID"] == "web-1" and n["Service"]["Port"] == 8080 and n["Service"]["Tags"] == ["v2", "urlprefix-web.example/"], n
assert n["Service"]["Meta"]["Version"] == "2" and n["Service"]["Meta"]["berth.routes"] == "web.example/", n
assert isinstance(n["Checks"], list) and n["Checks"][-1]["Status"] == "critical", n["Checks"]
assert c.health.service("web", passing=True)[1] == []
c.agent.check.ttl_pass("service:web-1")
assert len(c.health.service("web", passing=True)[1]) == 1
c.agent.check.ttl_warn("service:web-1")
assert c.health.service("web", passing=True)[1] == []
c.agent.check.ttl_pass("service:web-1")

# Tag filter.
assert len(c.health.service("web", tag="v2")[1]) == 1
assert c.health.service("web", tag="v1")[1] == []

# Catalog and agent views.
_, services = c.catalog.services()
assert "web" in services and "v2" in services["web"], services
_, cat = c.catalog.service("web")
assert cat[0]["ServiceID"] == "web-1" and cat[0]["ServicePort"] == 8080, cat
assert "web-1" in c.agent.services()

# Blocking query: wakes within a second of a change.
idx, _ = c.health.service("web")
def later():
    time.sleep(0.5)
    c.agent.service.register("web", service_id="web-2", address="127.0.0.1", port=8081)
threading.Thread(target=later).start()
started = time.monotonic()
new_idx, nodes = c.health.service("web", index=idx, wait="10s")
woke = time.monotonic() - started
assert len(nodes) == 2 and int(new_idx) > int(idx), (idx, new_idx, nodes)
assert 0.4 < woke < 1.5, woke

# ... and holds while nothing changes (a change to another service does not wake it).
threading.Thread(target=lambda: (time.sleep(0.3), c.agent.service.register("other", service_id="o-1", port=1))).start()
started = time.monotonic()
same_idx, _ = c.health.service("web", index=new_idx, wait="1s")
held = time.monotonic() - started
assert held >= 0.9 and same_idx == new_idx, (held, same_idx, new_idx)

# Header case on the wire.
st, headers, _ = http(sys.argv[1], "GET", "/v1/health/service/web")
assert "X-Consul-Index" in headers and int(headers["X-Consul-Index"]) > 0, headers

# Deregister.
c.agent.service.deregister("web-2")
assert [x["Service"]["ID"] for x in c.health.service("web")[1]] == ["web-1"]

# A TTL check that lapses turns critical, then the service goes (DeregisterCriticalServiceAfter).
c.agent.service.register("flaky", service_id="flaky-1", port=7000,
                         check={"TTL": "1s", "DeregisterCriticalServiceAfter": "1s", "Status": "passing"})
assert len(c.health.service("flaky", passing=True)[1]) == 1
wait_until("ttl lapsed", lambda: c.health.service("flaky", passing=True)[1] == [], timeout=5)
wait_until("deregistered", lambda: c.health.service("flaky")[1] == [], timeout=5)

# Bad registrations name the field.
st, _, body = http(sys.argv[1], "PUT", "/v1/agent/service/register", b'{"Port": 1}')
assert st == 400 and "'Name'" in body, body
st, _, body = http(sys.argv[1], "PUT", "/v1/agent/service/register", b'{"Name": "x", "Check": {"TTL": "soon"}}')
assert st == 400 and "'TTL'" in body, body
st, _, body = http(sys.argv[1], "PUT", "/v1/agent/check/pass/service:nope")
assert st == 404, (st, body)
st, _, body = http(sys.argv[1], "GET", "/v1/health/service/web?index=1&wait=forever")
assert st == 400 and "'wait'" in body, body
print("OK")
