"""Helpers for the registry's compatibility scripts: raw HTTP and polling."""
import json
import time
import urllib.error
import urllib.request


def http(addr, method, path, body=None, headers=None):
    req = urllib.request.Request("http://%s%s" % (addr, path), data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def wait_until(what, check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def metric(addr, name):
    _, _, text = http(addr, "GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("metric %s missing in:\n%s" % (name, text))


def hosts(client, service, **kw):
    return client.list_naming_instance(service, **kw)["hosts"]
