#!/usr/bin/env bash
# Every check CI runs: formatting, clippy with warnings as errors, and every test.
# Under CI=true a missing prerequisite fails its test instead of skipping it.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every skipped test writes its name and reason here (tests/support/mod.rs `skip`).
NOOK_SKIP_LOG=$(mktemp /tmp/nook-skips.XXXXXX)
export NOOK_SKIP_LOG
chmod 666 "$NOOK_SKIP_LOG"
report_skips() {
  local n
  n=$(wc -l <"$NOOK_SKIP_LOG")
  echo "test.sh: $n skipped test(s)"
  sed 's/^/  SKIP /' "$NOOK_SKIP_LOG"
  rm -f "$NOOK_SKIP_LOG"
}
trap report_skips EXIT
# A clean CI clone never rebuilds: incremental state would only take disk.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --no-fail-fast --all-targets -- --test-threads="${NOOK_TEST_THREADS:-4}"

# Containers as objects again with no XDG_RUNTIME_DIR, as in a Slurm batch job.
NOOK_TEST_NO_XDG=1 cargo test --locked --test lifecycle -- --test-threads="${NOOK_TEST_THREADS:-4}"
