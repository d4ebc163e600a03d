// Package composetest runs the top-level docker-compose.yml for real: it builds our image and a NATS
// image from scratch (no registry is needed), starts the whole stack — a 3-node NATS cluster, gateway,
// two workers, two projectors and the bank-account example — sends bank-account commands through the
// gateway's published port, kills under load the NATS node that leads the event stream and a worker
// (one connected to the gateway's node when there is one: it takes the gateway's commands first), brings
// them back, and checks that every acknowledged command is in the state and reached the read side.
//
// It lives in its own module so that the main module's `go test ./...` does not need Docker:
//
//	cd deploy/composetest && go test ./...
//
// COS_IMAGE and NATS_IMAGE, when both set, name images to use instead of building them; -short skips
// the test.
package composetest
