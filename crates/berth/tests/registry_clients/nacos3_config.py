"""nacos-sdk-python 3.x config service (the Nacos 2.x gRPC protocol) against Berth's
registry: publish, get, listen with a change notification within a second, compare-and-set
publish (a stale md5 refused), remove heard by the listener, a missing config read as "".

Usage: nacos3_config.py HTTP_ADDR GRPC_PORT_OFFSET
"""
import asyncio
import hashlib
import sys
import tempfile
import time

from common import metric
from v2.nacos import ClientConfigBuilder, ConfigParam, GRPCConfig, NacosConfigService, NacosException

ADDR = sys.argv[1]
OFFSET = int(sys.argv[2])


def config():
    tmp = tempfile.mkdtemp()
    return (ClientConfigBuilder().server_address(ADDR)
            .log_dir(tmp + "/logs").cache_dir(tmp + "/cache")
            .grpc_config(GRPCConfig(grpc_timeout=5000, port_offset=OFFSET)).build())


async def main():
    reader = await NacosConfigService.create_config_service(config())
    writer = await NacosConfigService.create_config_service(config())
    heard = asyncio.Queue()

    async def listener(tenant, group, data_id, content):
        await heard.put((data_id, content, time.monotonic()))

    assert await reader.get_config(ConfigParam(data_id="app.yaml", group="DEFAULT_GROUP")) == ""
    await reader.add_listener("app.yaml", "DEFAULT_GROUP", listener)
    # The SDK tells the server what it listens to on its next listen round (every 5 s):
    # measure the push from then on.
    deadline = time.monotonic() + 10
    while metric(ADDR, "berth_registry_config_grpc_listeners") < 1:
        assert time.monotonic() < deadline, "the listener never reached the server"
        await asyncio.sleep(0.05)

    assert await writer.publish_config(ConfigParam(data_id="app.yaml", group="DEFAULT_GROUP",
                                                   content="a: 1", type="yaml"))
    published = time.monotonic()
    data_id, content, at = await asyncio.wait_for(heard.get(), 10)
    assert (data_id, content) == ("app.yaml", "a: 1"), (data_id, content)
    latency = at - published
    assert latency < 1.0, "the change was heard after %.3f s" % latency
    assert await reader.get_config(ConfigParam(data_id="app.yaml", group="DEFAULT_GROUP")) == "a: 1"

    # Compare-and-set: the current md5 wins, a stale one is refused.
    md5 = hashlib.md5(b"a: 1").hexdigest()
    assert await writer.publish_config(ConfigParam(data_id="app.yaml", group="DEFAULT_GROUP",
                                                   content="a: 2", cas_md5=md5))
    assert (await asyncio.wait_for(heard.get(), 10))[1] == "a: 2"
    try:
        await writer.publish_config(ConfigParam(data_id="app.yaml", group="DEFAULT_GROUP",
                                                content="a: 3", cas_md5=md5))
        raise AssertionError("a stale casMd5 was accepted")
    except NacosException as e:
        assert "Cas publish fail" in str(e), str(e)
    assert await reader.get_config(ConfigParam(data_id="app.yaml", group="DEFAULT_GROUP")) == "a: 2"

    # A config in another group and namespace-less defaults stay apart.
    assert await writer.publish_config(ConfigParam(data_id="app.yaml", group="OTHER", content="b"))
    assert await reader.get_config(ConfigParam(data_id="app.yaml", group="OTHER")) == "b"
    assert await reader.get_config(ConfigParam(data_id="app.yaml", group="DEFAULT_GROUP")) == "a: 2"

    # Removal is heard.
    assert await writer.remove_config(ConfigParam(data_id="app.yaml", group="DEFAULT_GROUP"))
    data_id, content, _ = await asyncio.wait_for(heard.get(), 10)
    assert data_id == "app.yaml" and not content, content
    assert await reader.get_config(ConfigParam(data_id="app.yaml", group="DEFAULT_GROUP")) == ""

    await reader.shutdown()
    await writer.shutdown()
    print("change heard %.0f ms after the publish" % (latency * 1000))
    print("OK")


asyncio.run(main())
