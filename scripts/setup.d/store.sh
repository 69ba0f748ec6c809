#!/usr/bin/env bash
# The store's PostgreSQL engine is tested against a real PostgreSQL server: each test
# starts a throwaway cluster of its own from Debian's server binaries (initdb, pg_ctl).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    apt_install postgresql
fi
