"""nacos-sdk-python 1.0.0 against a three-member cluster sharing PostgreSQL: a config
published through one member is read through another and heard by a watcher on the third
within seconds (its long-poll woken by the other member's write); a v1 compare-and-set
through one member with a stale md5 is refused after a change through another.

Usage: nacos1_config_cluster.py HTTP_ADDR,HTTP_ADDR,HTTP_ADDR
"""
import hashlib
import os
import sys
import tempfile
import time
import urllib.parse

import nacos

from common import http, wait_until

A, B, C = sys.argv[1].split(",")
os.chdir(tempfile.mkdtemp())  # the SDK keeps snapshots in ./nacos-data

writer = nacos.NacosClient(A, namespace="")
reader = nacos.NacosClient(B, namespace="")
watcher = nacos.NacosClient(C, namespace="")
watcher.set_options(pulling_timeout=5)
heard = []
watcher.add_config_watcher("shared.properties", "DEFAULT_GROUP",
                           lambda p: heard.append((p["content"], time.monotonic())))
time.sleep(1)  # the watcher's first long-poll is open

assert writer.publish_config("shared.properties", "DEFAULT_GROUP", "x=1") is True
published = time.monotonic()
wait_until("the watcher on member C hearing member A's publish", lambda: heard, timeout=10)
assert heard[0][0] == "x=1", heard
latency = heard[0][1] - published
assert latency < 2.0, "heard after %.2f s" % latency
assert reader.get_config("shared.properties", "DEFAULT_GROUP", no_snapshot=True) == "x=1"

# Compare-and-set across members: the md5 read through B is stale after a write through A.
md5 = hashlib.md5(b"x=1").hexdigest()
assert writer.publish_config("shared.properties", "DEFAULT_GROUP", "x=2") is True
status, _, body = http(B, "POST", "/nacos/v1/cs/configs?" + urllib.parse.urlencode(
    {"dataId": "shared.properties", "group": "DEFAULT_GROUP", "content": "x=3", "casMd5": md5}))
assert status != 200 and hashlib.md5(b"x=2").hexdigest() in body, (status, body)
wait_until("the second change heard", lambda: any(c == "x=2" for c, _ in heard), timeout=10)
assert reader.get_config("shared.properties", "DEFAULT_GROUP", no_snapshot=True) == "x=2"

print("heard across members in %.0f ms" % (latency * 1000))
print("OK")
