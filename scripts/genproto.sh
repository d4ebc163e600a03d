#!/usr/bin/env bash
# Regenerates the committed Go code from proto/ (and the example's protos).
# Needs protoc and the well-known types (Debian: protobuf-compiler libprotobuf-dev); installs the pinned Go plugins into ./bin.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export GOBIN="$root/bin"
mkdir -p "$GOBIN"
[ -x "$GOBIN/protoc-gen-go" ] || go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
[ -x "$GOBIN/protoc-gen-go-grpc" ] || go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
export PATH="$GOBIN:$PATH"
module=github.com/cosnats/cosnats
gen() { # gen <include dir> <files...>
  local inc=$1; shift
  protoc -I "$inc" -I proto \
    --go_out=. --go_opt=module=$module \
    --go-grpc_out=. --go-grpc_opt=module=$module \
    "$@"
}
rm -rf gen
gen proto $(cd proto && find . -name '*.proto' | sort | sed 's|^\./||')
for dir in examples/*/proto; do
  [ -d "$dir" ] || continue
  rm -rf "$(dirname "$dir")/gen"
  gen "$dir" $(cd "$dir" && find . -name '*.proto' | sort | sed 's|^\./||')
done
