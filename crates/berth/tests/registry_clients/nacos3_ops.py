"""nacos-sdk-python 3.x with auth on, and the connection loader API: a client without
credentials is refused (403), one that logs in with its username and password works; the
loader lists the connection and its instance; a reset connection reconnects by itself and
its instance is not released meanwhile.

Usage: nacos3_ops.py HTTP_ADDR GRPC_PORT_OFFSET SECRET
"""
import asyncio
import json
import sys
import tempfile
import time
import urllib.parse

from common import http
from v2.nacos import (ClientConfigBuilder, GRPCConfig, ListInstanceParam, NacosNamingService,
                      RegisterInstanceParam)

ADDR, OFFSET, SECRET = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def config(password=None):
    tmp = tempfile.mkdtemp()
    builder = (ClientConfigBuilder().server_address(ADDR)
               .log_dir(tmp + "/logs").cache_dir(tmp + "/cache").load_cache_at_start(False)
               .grpc_config(GRPCConfig(grpc_timeout=5000, port_offset=OFFSET)))
    if password:
        builder = builder.username("nacos").password(password)
    return builder.build()


def token():
    status, _, body = http(ADDR, "POST", "/nacos/v1/auth/login?" + urllib.parse.urlencode(
        {"username": "ops", "password": SECRET}))
    assert status == 200, body
    return json.loads(body)["accessToken"]


def get(path):
    sep = "&" if "?" in path else "?"
    status, _, body = http(ADDR, "GET", path + sep + "accessToken=" + token())
    assert status == 200, (path, status, body)
    return json.loads(body)


async def eventually(what, check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.1)


async def main():
    # Without credentials every naming request is refused, naming the fix.
    anonymous = await NacosNamingService.create_naming_service(config())
    try:
        await anonymous.register_instance(RegisterInstanceParam(
            service_name="secure", group_name="DEFAULT_GROUP", ip="10.5.0.9", port=80))
        raise AssertionError("a client without a token registered")
    except AssertionError:
        raise
    except Exception as e:
        assert "403" in str(e) or "user not found" in str(e), str(e)
    await anonymous.shutdown()

    client = await NacosNamingService.create_naming_service(config(SECRET))
    assert await client.register_instance(RegisterInstanceParam(
        service_name="secure", group_name="DEFAULT_GROUP", ip="10.5.0.1", port=80))
    listed = await client.list_instances(ListInstanceParam(service_name="secure", healthy_only=None,
                                                           subscribe=False))
    assert [(i.ip, i.port) for i in listed] == [("10.5.0.1", 80)], listed

    # The loader lists the connection with what it holds; the loader needs a token too.
    status, _, _ = http(ADDR, "GET", "/nacos/v2/core/loader/current")
    assert status in (401, 403), status
    current = get("/nacos/v2/core/loader/current")
    holders = [c for c in current.values() if c["metaInfo"]["instances"] == 1]
    assert len(holders) == 1, current
    before = set(current)

    # A reset moves the client: the server releases nothing for it (the instance is still
    # listed right after), and the client reconnects (a new connection) and, by its own
    # redo, ends up holding its instance again.
    status, _, body = http(ADDR, "POST", "/nacos/v2/core/loader/reloadCurrent?count=5&accessToken=" + token())
    assert status == 200 and json.loads(body)["data"] >= 1, body
    hosts = get("/nacos/v1/ns/instance/list?serviceName=secure")["hosts"]
    assert [(h["ip"], h["port"]) for h in hosts] == [("10.5.0.1", 80)], hosts
    await eventually("the client's new connection",
                     lambda: set(get("/nacos/v2/core/loader/current")) - before, timeout=20)
    await eventually("the instance listed again after the client's redo",
                     lambda: [(h["ip"], h["port"]) for h in get("/nacos/v1/ns/instance/list?serviceName=secure")["hosts"]] == [("10.5.0.1", 80)],
                     timeout=45)
    status, _, body = http(ADDR, "POST", "/nacos/v2/core/loader/reloadCurrent?count=many&accessToken=" + token())
    assert status == 400 and "count" in body, (status, body)

    await client.shutdown()
    print("OK")


asyncio.run(main())
