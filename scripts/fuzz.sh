#!/usr/bin/env bash
# Runs every fuzz target for a budget of executions (CI's: a few seconds each on 2 cores), one after
# the other: go test fuzzes one target per invocation. Budgets are counts, not durations: a duration
# that ends while go test still replays the corpus fails with "context deadline exceeded" on a loaded
# machine. FUZZTIME (e.g. 60s) replaces every budget. The committed corpora (testdata/fuzz/<target>/)
# run first as seeds; a crash fails the script and leaves the input in testdata/fuzz to commit with
# the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(
  "./pkg/entity FuzzToken 20000x"
  "./pkg/intake FuzzDecode 20000x"
  "./pkg/eventlog FuzzDecodeHead 10000x"
  "./pkg/worker FuzzCommandRequest 10000x"
  "./pkg/config FuzzFromEnv 50000x"
  "./pkg/config FuzzReadSideFile 2000x"
)
for t in "${targets[@]}"; do
  read -r pkg name budget <<<"$t"
  budget=${FUZZTIME:-$budget}
  echo "fuzz $name ($pkg): $budget"
  go test -run '^$' -fuzz "^$name\$" -fuzztime "$budget" "$pkg" 2>&1 | grep -v '^fuzz: elapsed' || exit 1
done
