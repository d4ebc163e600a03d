module github.com/cosnats/cosnats/deploy/composetest

go 1.26.0

require (
	github.com/cosnats/cosnats v0.0.0-00010101000000-000000000000
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261110000943-09e21b237f2c // indirect
)

// The compose test uses the generated gRPC clients of the repository it tests.
replace github.com/cosnats/cosnats => ../..
