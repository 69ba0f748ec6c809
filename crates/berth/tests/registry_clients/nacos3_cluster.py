"""nacos-sdk-python 3.x against a three-member Berth registry cluster sharing PostgreSQL
for configs: instances registered through one member pushed to a subscriber on another,
a config published through one member heard by a listener on another and compare-and-set
across members; then the member holding two clients' connections is killed while they
stay up: the client that can reach another member moves there and its instance stays,
the one that cannot loses its instance on every member, and configs stay served.

Usage: nacos3_cluster.py HTTP_ADDR,HTTP_ADDR,HTTP_ADDR GRPC_PORT_OFFSET
It asks the test to kill member 1 by printing "CTL kill 1" and waits for a line back.
"""
import asyncio
import hashlib
import json
import sys
import tempfile
import time

from common import http, metric
from v2.nacos import (ClientConfigBuilder, ConfigParam, GRPCConfig, NacosConfigService,
                      NacosException, NacosNamingService, RegisterInstanceParam,
                      SubscribeServiceParam)

ADDRS = sys.argv[1].split(",")
OFFSET = int(sys.argv[2])


def config(*members):
    tmp = tempfile.mkdtemp()
    cfg = (ClientConfigBuilder().server_address(",".join(ADDRS[m] for m in members))
           .log_dir(tmp + "/logs").cache_dir(tmp + "/cache").load_cache_at_start(False)
           .grpc_config(GRPCConfig(grpc_timeout=5000, port_offset=OFFSET)).build())
    cfg.set_update_cache_when_empty(True)
    return cfg


async def eventually(what, check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.05)


def v1_hosts(member, service):
    status, _, body = http(ADDRS[member], "GET", "/nacos/v1/ns/instance/list?serviceName=" + service)
    assert status == 200, body
    return sorted((h["ip"], h["port"]) for h in json.loads(body)["hosts"])


def connections(member):
    return metric(ADDRS[member], "berth_registry_nacos_connections")


async def main():
    # A subscriber on member 0.
    watcher = await NacosNamingService.create_naming_service(config(0))
    seen = []

    async def on_change(instances):
        seen.append(sorted((i.ip, i.port) for i in instances))

    await watcher.subscribe(SubscribeServiceParam(service_name="pay", group_name="DEFAULT_GROUP",
                                                  subscribe_callback=on_change))

    # Configs: a listener on member 0, writers on members 2 and 1.
    reader = await NacosConfigService.create_config_service(config(0))
    heard = asyncio.Queue()

    async def listener(tenant, group, data_id, content):
        await heard.put((content, time.monotonic()))

    await reader.add_listener("shared.yaml", "DEFAULT_GROUP", listener)
    await eventually("the listener on member 0",
                     lambda: metric(ADDRS[0], "berth_registry_config_grpc_listeners") >= 1)
    writer2 = await NacosConfigService.create_config_service(config(2))
    assert await writer2.publish_config(ConfigParam(data_id="shared.yaml", group="DEFAULT_GROUP",
                                                    content="v: 1", type="yaml"))
    published = time.monotonic()
    content, at = await asyncio.wait_for(heard.get(), 10)
    assert content == "v: 1", content
    config_latency = at - published
    assert config_latency < 1.0, "heard on another member after %.3f s" % config_latency
    writer1 = await NacosConfigService.create_config_service(config(1))
    stale = hashlib.md5(b"v: 0").hexdigest()
    try:
        await writer1.publish_config(ConfigParam(data_id="shared.yaml", group="DEFAULT_GROUP",
                                                 content="v: 2", cas_md5=stale))
        raise AssertionError("a stale casMd5 was accepted on another member")
    except NacosException as e:
        assert "Cas publish fail" in str(e), str(e)
    assert await writer1.publish_config(ConfigParam(
        data_id="shared.yaml", group="DEFAULT_GROUP", content="v: 2",
        cas_md5=hashlib.md5(b"v: 1").hexdigest()))
    assert (await asyncio.wait_for(heard.get(), 10))[0] == "v: 2"

    # Two clients on member 1: one that knows only member 1, one that also knows member 2.
    stranded = await NacosNamingService.create_naming_service(config(1))
    assert await stranded.register_instance(RegisterInstanceParam(
        service_name="gone", group_name="DEFAULT_GROUP", ip="10.9.9.9", port=1))
    while True:
        before = connections(1)
        mover = await NacosNamingService.create_naming_service(config(1, 2))
        if connections(1) == before + 1:
            break
        await mover.shutdown()  # it picked member 2; try again until it sits on member 1
    assert await mover.register_instance(RegisterInstanceParam(
        service_name="pay", group_name="DEFAULT_GROUP", ip="10.9.0.2", port=80))
    registered = time.monotonic()
    await eventually("the registration on member 1 pushed from member 0",
                     lambda: seen and seen[-1] == [("10.9.0.2", 80)])
    push_latency = time.monotonic() - registered
    assert push_latency < 1.0, "pushed across members after %.3f s" % push_latency
    for member in range(3):
        await eventually("gone listed on member %d" % member,
                         lambda: v1_hosts(member, "gone") == [("10.9.9.9", 1)])
        await eventually("pay listed on member %d" % member,
                         lambda: v1_hosts(member, "pay") == [("10.9.0.2", 80)])

    print("CTL kill 1", flush=True)
    assert sys.stdin.readline().strip() == "killed", "the test did not kill member 1"
    killed = time.monotonic()

    # The stranded client's instance goes everywhere once the orphan timeout has passed
    # without beats; all along, the mover's instance stays listed on the members left
    # (the mover reconnects to member 2 and registers again before that timeout).
    deadline = time.monotonic() + 90
    first_gone = {}
    while not all(v1_hosts(m, "gone") == [] for m in (0, 2)):
        for m in (0, 2):
            if v1_hosts(m, "gone") == [] and m not in first_gone:
                first_gone[m] = time.monotonic() - killed
        assert time.monotonic() < deadline, "the stranded instance was never removed"
        for m in (0, 2):
            listed = v1_hosts(m, "pay")
            assert listed == [("10.9.0.2", 80)], "the mover's instance went on member %d: %s after %.1f s" % (m, listed, time.monotonic() - killed)
        await asyncio.sleep(0.2)
    gone_after = time.monotonic() - killed
    print("gone per member: %s, both %.1f" % (first_gone, gone_after), flush=True)
    assert seen[-1] == [("10.9.0.2", 80)], seen[-3:]
    # The mover's instance belongs to its new connection: it outlives the timeout.
    await asyncio.sleep(3)
    assert all(v1_hosts(m, "pay") == [("10.9.0.2", 80)] for m in (0, 2))
    # Configs stay served by the members left.
    assert await reader.get_config(ConfigParam(data_id="shared.yaml", group="DEFAULT_GROUP")) == "v: 2"
    assert await writer2.get_config(ConfigParam(data_id="shared.yaml", group="DEFAULT_GROUP")) == "v: 2"

    for client in (watcher, reader, writer1, writer2, mover, stranded):
        try:
            await asyncio.wait_for(client.shutdown(), 5)
        except Exception:
            pass
    print("config heard across members %.0f ms, push across members %.0f ms, "
          "stranded instance gone %.1f s after the kill" % (config_latency * 1000, push_latency * 1000, gone_after))
    print("OK")


asyncio.run(main())
