#!/usr/bin/env bash
# Builds the container images from the binaries of scripts/build-dist.sh (run it first):
#   scripts/build-images.sh cos     our image: every role, the probe and the bank-account example
#   scripts/build-images.sh nats    nats-server alone, from scratch (deploy/docker/nats/Dockerfile)
#   scripts/build-images.sh all     both
# Environment: IMAGE (default cosnats:dev), NATS_IMAGE (default cosnats-nats:dev), BASE (base of our
# image; default the Dockerfile's, distroless static nonroot; use scratch where nothing can be pulled),
# GOARCH (default: the host's), VERSION, REVISION and CREATED (default: from git) for the OCI labels.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
arch=${GOARCH:-$(go env GOARCH)}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
# The commit's time, not the clock's: rebuilding a commit gives the same labels, so the build cache
# holds and no dangling image is left behind.
created=${CREATED:-$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)}
dist=dist/linux_$arch

need() {
  for b in "$@"; do
    [ -x "$dist/$b" ] || { echo "build-images: $dist/$b is missing: run scripts/build-dist.sh first" >&2; exit 1; }
  done
}

cos() {
  need gateway worker projector cosprobe bankhandler bankreadside bankclient
  local base=()
  [ -z "${BASE:-}" ] || base=(--build-arg "BASE=$BASE")
  docker build "${base[@]}" \
    --build-arg "TARGETARCH=$arch" \
    --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$created" \
    -t "${IMAGE:-cosnats:dev}" .
}

nats() {
  need nats-server
  docker build -f deploy/docker/nats/Dockerfile \
    --build-arg "TARGETARCH=$arch" \
    --build-arg "NATS_VERSION=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)" \
    -t "${NATS_IMAGE:-cosnats-nats:dev}" .
}

case $what in
  cos) cos ;;
  nats) nats ;;
  all) cos; nats ;;
  *) echo "usage: $0 [cos|nats|all]" >&2; exit 2 ;;
esac
