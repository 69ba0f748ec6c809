#!/usr/bin/env bash
# Real third-party clients the registry's compatibility tests drive: nacos-sdk-python 1.x
# (Nacos v1 HTTP API) and py-consul (Consul HTTP API). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${BERTH_VENV:-$PWD/target/venv}"
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
if "$VENV/bin/python" -c 'import nacos, consul, importlib.metadata as m; assert m.version("nacos-sdk-python") == "1.0.0"' 2>/dev/null; then
    exit 0
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "nacos-sdk-python==1.0.0" "py-consul"
