#!/usr/bin/env bash
# Builds the static Linux binaries that the container images copy (the GoReleaser way: compile on the
# host, package without a compiler in the image) into dist/linux_<arch>/:
#   gateway worker projector cosprobe cosctl    the three roles, the health probe, the operator CLI
#   bankhandler bankreadside bankclient         the bank-account example
#   nats-server                                 the server version go.mod pins, for deploy/docker/nats
#   empty/                                      copied as the images' data directories
# Environment: GOARCH (default: the host's), VERSION and REVISION (default: from git) stamped into
# pkg/buildinfo.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${GOARCH:-$(go env GOARCH)}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
out=dist/linux_$arch
pkg=github.com/cosnats/cosnats

# empty/ becomes the images' writable data directories (owned by the runtime user).
rm -rf "$out/empty" && mkdir -p "$out/empty"
# One go build for all of them: packages compile once and in parallel. -o <dir>/ names each binary
# after its package (nats-server/v2 → nats-server).
CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -o "$out/" \
  -ldflags "-s -w -X $pkg/pkg/buildinfo.Version=$version -X $pkg/pkg/buildinfo.Revision=$revision" \
  ./cmd/gateway ./cmd/worker ./cmd/projector ./cmd/cosprobe ./cmd/cosctl \
  ./examples/bankaccount/cmd/bankhandler ./examples/bankaccount/cmd/bankreadside \
  ./examples/bankaccount/cmd/bankclient \
  github.com/nats-io/nats-server/v2
echo "built $version ($revision) into $out:"
ls -l "$out"
