#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME each (default 10s; CI's budget), one after the other: go test
# fuzzes one target per invocation. The committed corpora (testdata/fuzz/<target>/) run first as seeds;
# a crash fails the script and leaves the input in testdata/fuzz to commit with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
targets=(
  "./pkg/entity FuzzToken"
  "./pkg/intake FuzzDecode"
  "./pkg/eventlog FuzzDecodeHead"
  "./pkg/worker FuzzCommandRequest"
  "./pkg/config FuzzFromEnv"
  "./pkg/config FuzzReadSideFile"
)
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "fuzz $name ($pkg) for $FUZZTIME"
  go test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | grep -v '^fuzz: elapsed' || exit 1
done
