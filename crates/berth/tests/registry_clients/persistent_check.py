"""After a restart: the persistent instance and the service metadata are back, the
ephemeral instance is not, and the server-side TCP check keeps the instance healthy."""
import json
import sys

import nacos

from common import http, wait_until

addr = sys.argv[1]
c = nacos.NacosClient(addr, namespace="")
hs = c.list_naming_instance("db")["hosts"]
assert len(hs) == 1 and hs[0]["ephemeral"] is False and hs[0]["metadata"] == {"role": "primary"}, hs
assert c.list_naming_instance("cache")["hosts"] == []
st, _, body = http(addr, "GET", "/nacos/v1/ns/service?serviceName=billing")
assert st == 200 and json.loads(body)["metadata"] == {"team": "pay"}, body
# A persistent instance on a dead port turns unhealthy through the TCP check.
assert c.add_naming_instance("dead", "127.0.0.1", 1, cluster_name="DEFAULT", ephemeral=False)
wait_until("dead port unhealthy", lambda: not c.list_naming_instance("dead")["hosts"][0]["healthy"])
print("OK")
