package main

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// TestServe checks the wiring (handler and health registered) and that
// cancelling the context stops the server cleanly.
func TestServe(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, lis) }()
	t.Cleanup(cancel)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{
		Service: cosv1.ReadSideHandlerService_ServiceDesc.ServiceName,
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, want SERVING", resp.GetStatus())
	}
	// A reply (not Unimplemented) proves the read-side handler is served; an
	// empty request is rejected with Successful=false.
	rs, err := cosv1.NewReadSideHandlerServiceClient(conn).HandleReadSide(context.Background(), &cosv1.HandleReadSideRequest{})
	if err != nil || rs.GetSuccessful() {
		t.Errorf("HandleReadSide(empty) = %v, %v; want Successful=false, nil", rs, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}
