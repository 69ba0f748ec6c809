"""After a restart: the persistent instance and the service metadata are back, the
ephemeral instance is not, and the server-side TCP check keeps the instance healthy."""
import json
import sys
import urllib.parse

import nacos

from common import http, wait_until

addr = sys.argv[1]
c = nacos.NacosClient(addr, namespace="")
hs = c.list_naming_instance("db")["hosts"]
assert len(hs) == 1 and hs[0]["ephemeral"] is False and hs[0]["metadata"] == {"role": "primary"}, hs
assert c.list_naming_instance("cache")["hosts"] == []
st, _, body = http(addr, "GET", "/nacos/v1/ns/service?serviceName=billing")
assert st == 200 and json.loads(body)["metadata"] == {"team": "pay"}, body
st, _, body = http(addr, "GET", "/nacos/v1/ns/service?serviceName=db")
clusters = json.loads(body)["clusters"]
assert clusters[0]["healthChecker"] == {"type": "HTTP", "path": "/metrics", "headers": "", "expectedResponseCode": 200}, clusters

# HTTP check when asked: the registry's own /metrics answers 200, /nope 404.
port = int(addr.rsplit(":", 1)[1])
assert c.add_naming_instance("web-http", "127.0.0.1", port, cluster_name="DEFAULT", ephemeral=False, healthy=False)
hc = lambda path: urllib.parse.quote(json.dumps({"type": "HTTP", "path": path}))
st, _, body = http(addr, "PUT", "/nacos/v1/ns/cluster?serviceName=web-http&clusterName=DEFAULT&healthChecker=" + hc("/metrics"))
assert st == 200, body
wait_until("http check passes", lambda: c.list_naming_instance("web-http")["hosts"][0]["healthy"])
st, _, body = http(addr, "PUT", "/nacos/v1/ns/cluster?serviceName=web-http&clusterName=DEFAULT&healthChecker=" + hc("/nope"))
assert st == 200, body
wait_until("http check fails", lambda: not c.list_naming_instance("web-http")["hosts"][0]["healthy"])
st, _, body = http(addr, "PUT", "/nacos/v1/ns/cluster?serviceName=web-http&clusterName=DEFAULT&healthChecker=%7B%22type%22%3A%22SMTP%22%7D")
assert st == 400 and "'healthChecker'" in body, body

# A persistent instance on a dead port turns unhealthy through the TCP check.
assert c.add_naming_instance("dead", "127.0.0.1", 1, cluster_name="DEFAULT", ephemeral=False)
wait_until("dead port unhealthy", lambda: not c.list_naming_instance("dead")["hosts"][0]["healthy"])
print("OK")
