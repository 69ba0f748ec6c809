"""Auth on: requests need a token from the secret or from /nacos/v1/auth/login; a
User-Agent of Nacos-Server (CVE-2021-29441) grants nothing."""
import json
import sys
import urllib.parse

import nacos

from common import http

addr, secret = sys.argv[1], open(sys.argv[2]).read().strip()
path = "/nacos/v1/ns/instance/list?serviceName=x"
st, _, body = http(addr, "GET", path)
assert st == 403 and "token" in body, (st, body)
st, _, body = http(addr, "GET", path, headers={"User-Agent": "Nacos-Server"})
assert st == 403, (st, body)
st, _, body = http(addr, "POST", "/nacos/v1/auth/login", urllib.parse.urlencode({"username": "nacos", "password": "wrong"}).encode(),
                   {"Content-Type": "application/x-www-form-urlencoded"})
assert st == 403, (st, body)
# The real client logs in with username/password and sends accessToken.
c = nacos.NacosClient(addr, namespace="", username="nacos", password=secret)
assert c.add_naming_instance("secured", "127.0.0.1", 8080, cluster_name="DEFAULT")
assert len(c.list_naming_instance("secured")["hosts"]) == 1
# Consul token header, and the secret as a bearer token.
st, _, body = http(addr, "GET", "/v1/catalog/services", headers={"X-Consul-Token": secret})
assert st == 200 and "secured" in json.loads(body), (st, body)
st, _, body = http(addr, "GET", "/v1/catalog/services", headers={"X-Consul-Token": "forged"})
assert st == 403, (st, body)
print("OK")
