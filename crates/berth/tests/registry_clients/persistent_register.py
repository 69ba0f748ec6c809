"""Registers a persistent (ephemeral=false) instance on a port something listens on, and
a service with metadata; the restart test checks both come back."""
import json
import sys
import urllib.parse

import nacos

from common import http

addr = sys.argv[1]
c = nacos.NacosClient(addr, namespace="")
# The registry's own HTTP port listens, so the server-side TCP check passes.
port = int(addr.rsplit(":", 1)[1])
assert c.add_naming_instance("db", "127.0.0.1", port, cluster_name="DEFAULT", ephemeral=False, metadata={"role": "primary"})
assert c.add_naming_instance("cache", "127.0.0.1", 6379, cluster_name="DEFAULT")  # ephemeral: not kept
st, _, body = http(addr, "POST", "/nacos/v1/ns/service?serviceName=billing&metadata=team%3Dpay")
assert st == 200, body
hc = urllib.parse.quote(json.dumps({"type": "HTTP", "path": "/metrics"}))
st, _, body = http(addr, "PUT", "/nacos/v1/ns/cluster?serviceName=db&clusterName=DEFAULT&healthChecker=" + hc)
assert st == 200, body
print("OK")
