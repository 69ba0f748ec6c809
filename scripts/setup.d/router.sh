#!/usr/bin/env bash
# Router tests start a real nats-server (Debian package) on a loopback port.
# The benchmark (scripts/bench-router) also needs nginx and wrk; they are installed there.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
apt_install nats-server
