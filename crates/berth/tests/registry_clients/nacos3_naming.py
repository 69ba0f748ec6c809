"""nacos-sdk-python 3.x (the Nacos 2.x gRPC protocol) against Berth's registry: register,
subscribe with pushes within a second, list, batch, services, v1 and Consul views of gRPC
instances, a closed connection's instances removed, persistent instances kept, bad input.

Usage: nacos3_naming.py HTTP_ADDR GRPC_PORT_OFFSET
"""
import asyncio
import json
import sys
import tempfile
import time
import urllib.parse

from common import http
from v2.nacos import (BatchRegisterInstanceParam, ClientConfigBuilder, DeregisterInstanceParam,
                      GRPCConfig, ListInstanceParam, ListServiceParam, NacosNamingService,
                      RegisterInstanceParam, SubscribeServiceParam)

ADDR = sys.argv[1]
OFFSET = int(sys.argv[2])


def config():
    tmp = tempfile.mkdtemp()
    cfg = (ClientConfigBuilder().server_address(ADDR)
           .log_dir(tmp + "/logs").cache_dir(tmp + "/cache").load_cache_at_start(False)
           .grpc_config(GRPCConfig(grpc_timeout=5000, port_offset=OFFSET)).build())
    cfg.set_update_cache_when_empty(True)
    return cfg


async def eventually(what, check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await check() if asyncio.iscoroutinefunction(check) else check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.05)


def v1_hosts(service):
    status, _, body = http(ADDR, "GET", "/nacos/v1/ns/instance/list?serviceName=" + service)
    assert status == 200, body
    return sorted((h["ip"], h["port"]) for h in json.loads(body)["hosts"])


def consul_addresses(service):
    status, _, body = http(ADDR, "GET", "/v1/health/service/" + service)
    assert status == 200, body
    return sorted((e["Service"]["Address"], e["Service"]["Port"]) for e in json.loads(body))


async def main():
    watcher = await NacosNamingService.create_naming_service(config())
    owner = await NacosNamingService.create_naming_service(config())

    # A subscriber hears a registration within a second.
    seen = []
    stamps = []

    async def on_change(instances):
        seen.append(sorted((i.ip, i.port, i.metadata.get("zone", "")) for i in instances))
        stamps.append(time.monotonic())

    await watcher.subscribe(SubscribeServiceParam(service_name="orders", group_name="DEFAULT_GROUP",
                                                  subscribe_callback=on_change))
    await eventually("the initial (empty) state", lambda: seen == [[]])
    assert await owner.register_instance(RegisterInstanceParam(
        service_name="orders", group_name="DEFAULT_GROUP", ip="10.1.0.1", port=8080,
        metadata={"zone": "a"}))
    registered = time.monotonic()
    await eventually("the push of the registration", lambda: [("10.1.0.1", 8080, "a")] in seen)
    latency = stamps[seen.index([("10.1.0.1", 8080, "a")])] - registered
    assert latency < 1.0, "push took %.3f s" % latency

    listed = await watcher.list_instances(ListInstanceParam(service_name="orders", healthy_only=None))
    assert [(i.ip, i.port, i.clusterName, i.ephemeral) for i in listed] == [("10.1.0.1", 8080, "DEFAULT", True)], listed

    # The gRPC instance shows in the v1 and Consul APIs; a v1 instance shows to gRPC clients.
    assert v1_hosts("orders") == [("10.1.0.1", 8080)]
    assert consul_addresses("orders") == [("10.1.0.1", 8080)]
    status, _, body = http(ADDR, "POST", "/nacos/v1/ns/instance?" + urllib.parse.urlencode(
        {"serviceName": "orders", "ip": "10.1.0.2", "port": 8081, "ephemeral": "false"}))
    assert status == 200, body
    await eventually("the v1 instance pushed over gRPC",
                     lambda: any(("10.1.0.2", 8081, "") in s for s in seen))

    # Re-registering on one connection replaces its instance of the service (2.x).
    assert await owner.register_instance(RegisterInstanceParam(
        service_name="orders", group_name="DEFAULT_GROUP", ip="10.1.0.1", port=8090,
        metadata={"zone": "b"}))
    await eventually("the replacement pushed",
                     lambda: seen[-1] == [("10.1.0.1", 8090, "b"), ("10.1.0.2", 8081, "")])

    # Deregistration is pushed.
    assert await owner.deregister_instance(DeregisterInstanceParam(
        service_name="orders", group_name="DEFAULT_GROUP", ip="10.1.0.1", port=8090))
    await eventually("the deregistration pushed", lambda: seen[-1] == [("10.1.0.2", 8081, "")])

    # Batch registration: the list is the connection's whole set for the service.
    batch = [RegisterInstanceParam(service_name="pay", group_name="DEFAULT_GROUP", ip="10.2.0.%d" % n,
                                   port=9000) for n in (1, 2, 3)]
    assert await owner.batch_register_instances(BatchRegisterInstanceParam(
        service_name="pay", group_name="DEFAULT_GROUP", instances=batch))
    await eventually("three batch instances", lambda: len(v1_hosts("pay")) == 3)
    assert await owner.batch_register_instances(BatchRegisterInstanceParam(
        service_name="pay", group_name="DEFAULT_GROUP", instances=batch[:1]))
    await eventually("the batch narrowed to one", lambda: v1_hosts("pay") == [("10.2.0.1", 9000)])

    services = await watcher.list_services(ListServiceParam(group_name="DEFAULT_GROUP", page_no=1, page_size=10))
    assert services.count == 2 and sorted(services.services) == ["orders", "pay"], services

    # A persistent instance over gRPC outlives its connection; ephemeral ones go with it.
    assert await owner.register_instance(RegisterInstanceParam(
        service_name="db", group_name="DEFAULT_GROUP", ip="127.0.0.1", port=5432, ephemeral=False))
    assert await owner.register_instance(RegisterInstanceParam(
        service_name="orders", group_name="DEFAULT_GROUP", ip="10.1.0.3", port=8080))
    await eventually("the last registration pushed", lambda: ("10.1.0.3", 8080, "") in seen[-1])
    await owner.shutdown()
    closed = time.monotonic()
    await eventually("the closed connection's instances gone",
                     lambda: v1_hosts("orders") == [("10.1.0.2", 8081)] and v1_hosts("pay") == [], timeout=10)
    gone_after = time.monotonic() - closed
    await eventually("the watcher told", lambda: seen[-1] == [("10.1.0.2", 8081, "")])
    assert v1_hosts("db") == [("127.0.0.1", 5432)], "a persistent instance stays"

    await watcher.shutdown()
    print("push latency %.0f ms, instances gone %.1f s after close" % (latency * 1000, gone_after))
    print("OK")


asyncio.run(main())
