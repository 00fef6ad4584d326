#!/usr/bin/env bash
# The project's test command: sets up the test environment (idempotent), checks formatting and
# lints, then runs every test against the real dockerd, docker compose v2 and Traefik v3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/test-env.sh up
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --no-fail-fast "$@"
