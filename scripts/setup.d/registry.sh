#!/usr/bin/env bash
# Real third-party clients the registry's compatibility tests drive: nacos-sdk-python 1.x
# (Nacos v1 HTTP API), py-consul (Consul HTTP API) and dnspython (Consul DNS) in the venv,
# dig (bind9-dnsutils, Consul DNS), and nacos-sdk-python
# 3.x (the Nacos 2.x gRPC protocol; the same package name, so a venv of its own:
# target/venv-nacos3). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
apt_install bind9-dnsutils
VENV="${BERTH_VENV:-$PWD/target/venv}"
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import nacos, consul, dns.query, importlib.metadata as m; assert m.version("nacos-sdk-python") == "1.0.0"' 2>/dev/null; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "nacos-sdk-python==1.0.0" "py-consul" "dnspython"
fi
NACOS3_VENV="${BERTH_NACOS3_VENV:-$(dirname "$VENV")/venv-nacos3}"
NACOS3_VERSION=3.2.0
if [[ ! -x "$NACOS3_VENV/bin/python" ]]; then
    python3 -m venv "$NACOS3_VENV"
fi
if ! "$NACOS3_VENV/bin/python" -c "import v2.nacos, importlib.metadata as m; assert m.version('nacos-sdk-python') == '$NACOS3_VERSION'" 2>/dev/null; then
    "$NACOS3_VENV/bin/pip" install --quiet --disable-pip-version-check "nacos-sdk-python==$NACOS3_VERSION"
fi
