#!/usr/bin/env bash
# govulncheck without the network: the Go vulnerability database is built from the golang.org/x/vulndb
# module (its OSV files, through the Go module proxy) at a pinned version, then govulncheck scans the
# module. Fails when our code calls a vulnerable function of a required module; vulnerabilities in the
# standard library are listed (a newer Go toolchain fixes them; see SECURITY.md).
set -euo pipefail
cd "$(dirname "$0")/.."
VULNDB=${VULNDB:-v0.0.0-20261105234957-e22db6528018}
GOVULNCHECK=${GOVULNCHECK:-v1.9.0}
db="$(go env GOCACHE)/cos-vulndb-$VULNDB"
if [ ! -f "$db/index/db.json" ]; then
  src="$(go mod download -json "golang.org/x/vulndb@$VULNDB" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  rm -rf "$db.tmp"
  go run "golang.org/x/vulndb/cmd/indexdb@$VULNDB" -vulns "$src/data/osv" -out "$db.tmp"
  mv "$db.tmp" "$db"
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# govulncheck exits 3 when it finds anything; the decision is vulncheck's.
go run "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK" -db "file://$db" -format json ./... > "$out" || [ $? -eq 3 ]
go run ./scripts/vulncheck < "$out"
