#!/usr/bin/env bash
# The agent's tests run real programs as instances: python3 (http.server as the app),
# openssl (a self-signed certificate for the https health check). The docker driver's
# tests start a throwaway dockerd of their own (Debian's docker.io) and import an image
# built from Debian's static busybox (busybox-static): nothing is pulled.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
command -v python3 >/dev/null 2>&1 || apt_install python3
command -v openssl >/dev/null 2>&1 || apt_install openssl
apt_install docker.io busybox-static tar
