# Developer tasks. `make test` is what CI runs after `make check`.
.PHONY: all build test check proto check-proto fmt vet run check-observability

all: build

build:
	go build ./...

test:
	go test -race ./...

# Regenerate the committed protobuf/gRPC code (needs protoc: apt-get install protobuf-compiler libprotobuf-dev).
proto:
	./scripts/genproto.sh

# Fail when the committed generated code is stale.
check-proto: proto
	@git diff --exit-code -- gen examples || (echo "generated code is stale: run 'make proto' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- gen examples | grep '^??.*\.pb\.go$$')" || (echo "untracked generated files: run 'make proto' and commit" >&2; exit 1)

fmt:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:" >&2; gofmt -l $$(git ls-files '*.go') >&2; exit 1)

vet:
	go vet ./...

check: fmt vet check-proto

# The quickstart: the whole system with the example handler, embedded NATS, gRPC on :9000.
run:
	go run ./examples/bankaccount/cmd/bankdemo

# Alert rules, their unit tests and the compose Prometheus configuration (needs promtool: apt-get
# install prometheus).
check-observability:
	./scripts/check-observability.sh

# Container images, the GoReleaser way: static binaries built on the host into dist/linux_<arch>/
# (scripts/build-dist.sh), then packaged without a compiler (Dockerfile, deploy/docker/nats/Dockerfile).
# BASE empty = the Dockerfile's default, distroless static nonroot; BASE=scratch needs no pull.
IMAGE ?= cosnats:dev
NATS_IMAGE ?= cosnats-nats:dev
BASE ?=

.PHONY: dist image nats-image compose-test

dist:
	./scripts/build-dist.sh

image: dist
	IMAGE='$(IMAGE)' BASE='$(BASE)' ./scripts/build-images.sh cos

nats-image: dist
	NATS_IMAGE='$(NATS_IMAGE)' ./scripts/build-images.sh nats

# docker-compose.yml for real: builds both images on scratch, kills a NATS node and a worker under load;
# then the hardened overlay (TLS, mTLS, NATS users and permissions).
compose-test:
	cd deploy/composetest && go test -count=1 -timeout 12m ./...

.PHONY: chart-test
# The Helm chart's tests (deploy/charttest has its own go.mod): strict lint and render of
# deploy/helm/cosnats, schema and layout-guard cases, and the rendered Deployments run as processes.
chart-test:
	cd deploy/charttest && go vet ./... && go test -count=1 ./...

.PHONY: fuzz vulncheck
# Every fuzz target for its execution budget (FUZZTIME=60s for a duration instead).
fuzz:
	./scripts/fuzz.sh

# govulncheck against the vulnerability database built from the golang.org/x/vulndb module (no network
# beyond the Go module proxy).
vulncheck:
	./scripts/vulncheck.sh
