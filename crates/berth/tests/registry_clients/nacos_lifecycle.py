"""nacos-sdk-python 1.0.0 against the registry: register, list, beat, get, modify,
expiry through preserved metadata timeouts, re-register from a beat, deregister."""
import sys

import nacos

from common import hosts, wait_until

addr = sys.argv[1]
c = nacos.NacosClient(addr, namespace="")

# Register with metadata, in a named cluster.
assert c.add_naming_instance("shop-web", "127.0.0.1", 8080, cluster_name="c1", metadata={"version": "2"})
hs = hosts(c, "shop-web")
assert len(hs) == 1, hs
h = hs[0]
assert h["ip"] == "127.0.0.1" and h["port"] == 8080 and h["clusterName"] == "c1", h
assert h["metadata"] == {"version": "2"}, h
assert h["instanceId"] == "127.0.0.1#8080#c1#DEFAULT_GROUP@@shop-web", h
assert h["healthy"] and h["enabled"] and h["ephemeral"], h

# Beat answers exactly what Nacos answers.
beat = c.send_heartbeat("shop-web", "127.0.0.1", 8080, cluster_name="c1")
assert beat == {"clientBeatInterval": 5000, "code": 10200, "lightBeatEnabled": True}, beat

# Get and modify.
got = c.get_naming_instance("shop-web", "127.0.0.1", 8080, "c1")
assert got["service"] == "DEFAULT_GROUP@@shop-web" and got["port"] == 8080, got
assert c.modify_naming_instance("shop-web", "127.0.0.1", 8080, cluster_name="c1", weight=2.5)
assert hosts(c, "shop-web")[0]["weight"] == 2.5

# Cluster and healthy filters.
assert hosts(c, "shop-web", clusters="c1") and not hosts(c, "shop-web", clusters="other")

# A beat for an unknown instance carries its body: the registry re-registers it.
beat = c.send_heartbeat("lost-svc", "127.0.0.1", 9090, metadata={"from": "beat"})
assert beat["code"] == 10200, beat
hs = hosts(c, "lost-svc")
assert len(hs) == 1 and hs[0]["metadata"] == {"from": "beat"}, hs

# Short per-instance timeouts: unhealthy after 1 s, gone after 2 s without beats.
meta = {"preserved.heart.beat.timeout": "1000", "preserved.ip.delete.timeout": "2000",
        "preserved.heart.beat.interval": "500"}
assert c.add_naming_instance("short-lived", "127.0.0.1", 7070, cluster_name="DEFAULT", metadata=meta)
h = hosts(c, "short-lived")[0]
assert h["instanceHeartBeatTimeOut"] == 1000 and h["ipDeleteTimeout"] == 2000, h
assert c.send_heartbeat("short-lived", "127.0.0.1", 7070, metadata=meta)["clientBeatInterval"] == 500
wait_until("instance unhealthy", lambda: [x for x in hosts(c, "short-lived") if not x["healthy"]])
assert hosts(c, "short-lived", healthy_only=True) == []
wait_until("instance removed", lambda: hosts(c, "short-lived") == [])

# Deregister.
assert c.remove_naming_instance("shop-web", "127.0.0.1", 8080, cluster_name="c1")
assert hosts(c, "shop-web") == []
print("OK")
