#!/usr/bin/env bash
# The web UI is tested in a real browser: Debian's Chromium driven through ChromeDriver
# (WebDriver), headless.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
apt_install chromium chromium-driver
