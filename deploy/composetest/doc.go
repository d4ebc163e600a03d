// Package composetest runs the top-level docker-compose.yml for real: it builds our image and a NATS
// image from scratch (no registry is needed), starts the whole stack — a 3-node NATS cluster, gateway,
// two workers, two projectors and the bank-account example — sends bank-account commands through the
// gateway's published port, kills under load the NATS node that leads the event stream and a worker
// (one connected to the gateway's node when there is one: it takes the gateway's commands first), brings
// them back, and checks that every acknowledged command is in the state and reached the read side.
//
// TestHardenedCompose adds docker-compose.hardened.yml with the certificates and passwords of
// scripts/devcerts: the gateway takes only mTLS clients of the demo CA (plaintext, no certificate and
// another CA's certificate are refused) and keeps the operator's services off its port; NATS refuses
// plaintext, connections without credentials and a producer's forged event; a bank command over mTLS
// is stored, returned by GetState and applied by the read side. Both tests share one image build.
//
// It lives in its own module so that the main module's `go test ./...` does not need Docker:
//
//	cd deploy/composetest && go test ./...
//
// COS_IMAGE and NATS_IMAGE, when both set, name images to use instead of building them; -short skips
// the test.
package composetest
