#!/usr/bin/env bash
# The fuzz pass (scripts/fuzz) needs cargo-fuzz, and a C++ compiler for libFuzzer, which
# libfuzzer-sys builds from source. The version is pinned so every machine runs the same
# driver; --locked builds it with the dependencies it was released with.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
apt_install g++
CARGO_FUZZ_VERSION=0.13.2
if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
