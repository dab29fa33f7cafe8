#!/usr/bin/env bash
# Every check CI runs: formatting, clippy with warnings as errors, and every test.
# Under CI=true a missing prerequisite fails its test instead of skipping it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets -- --test-threads="${NOOK_TEST_THREADS:-4}"

# Containers as objects again with no XDG_RUNTIME_DIR, as in a Slurm batch job.
NOOK_TEST_NO_XDG=1 cargo test --locked --test lifecycle -- --test-threads="${NOOK_TEST_THREADS:-4}"
