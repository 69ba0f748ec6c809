"""Nacos 1.x UDP push: a list request with udpPort subscribes; a change arrives as a `dom`
packet (gzip when large) within well under a second; the ack is counted; a subscriber that
never acks is dropped."""
import gzip
import json
import socket
import sys
import time

import nacos

from common import http, metric, wait_until

addr = sys.argv[1]
c = nacos.NacosClient(addr, namespace="")

def subscribe(service, sock):
    port = sock.getsockname()[1]
    st, _, body = http(addr, "GET", "/nacos/v1/ns/instance/list?serviceName=%s&udpPort=%d&clientIP=127.0.0.1" % (service, port))
    assert st == 200 and json.loads(body)["cacheMillis"] == 10000, body

def receive(sock, timeout=2.0):
    sock.settimeout(timeout)
    packet, sender = sock.recvfrom(65536)
    if packet[:2] == b"\x1f\x8b":
        packet = gzip.decompress(packet)
    return json.loads(packet), sender

listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listener.bind(("127.0.0.1", 0))
subscribe("pushed", listener)

started = time.monotonic()
assert c.add_naming_instance("pushed", "127.0.0.1", 8001)
msg, sender = receive(listener)
elapsed = time.monotonic() - started
assert msg["type"] == "dom", msg
data = json.loads(msg["data"])
assert data["name"] == "DEFAULT_GROUP@@pushed" and [h["port"] for h in data["hosts"]] == [8001], data
assert elapsed < 1.0, elapsed
ack = {"type": "push-ack", "lastRefTime": str(msg["lastRefTime"]), "data": ""}
listener.sendto(json.dumps(ack).encode(), sender)
wait_until("ack counted", lambda: metric(addr, "berth_registry_pushes_acked_total") >= 1)

# Big service: the packet is gzipped.
for i in range(30):
    c.add_naming_instance("pushed", "127.0.0.1", 9000 + i, metadata={"pad": "x" * 40})
    msg, sender = receive(listener)
    listener.sendto(json.dumps({"type": "push-ack", "lastRefTime": str(msg["lastRefTime"]), "data": ""}).encode(), sender)
assert len(json.loads(msg["data"])["hosts"]) == 31

# Raw packet check for gzip.
c.add_naming_instance("pushed", "127.0.0.1", 9999)
listener.settimeout(2.0)
raw, sender = listener.recvfrom(65536)
assert raw[:2] == b"\x1f\x8b", raw[:20]
msg = json.loads(gzip.decompress(raw))
listener.sendto(json.dumps({"type": "push-ack", "lastRefTime": str(msg["lastRefTime"]), "data": ""}).encode(), sender)

# A subscriber that never acks gets retries, then is dropped.
silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
silent.bind(("127.0.0.1", 0))
subscribe("quiet", silent)
dropped_before = metric(addr, "berth_registry_push_subscribers_dropped_total")
assert c.add_naming_instance("quiet", "127.0.0.1", 8002)
first, _ = receive(silent)
retry, _ = receive(silent)
assert first["data"] == retry["data"], "a retry resends the same state"
wait_until("silent subscriber dropped",
           lambda: metric(addr, "berth_registry_push_subscribers_dropped_total") > dropped_before)
assert metric(addr, "berth_registry_pushes_failed_total") >= 1
print("OK")
