# Developer tasks. `make test` is what CI runs after `make check`.
.PHONY: all build test check proto check-proto fmt vet run

all: build

build:
	go build ./...

test:
	go test -race ./...

# Regenerate the committed protobuf/gRPC code (needs protoc: apt-get install protobuf-compiler).
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
