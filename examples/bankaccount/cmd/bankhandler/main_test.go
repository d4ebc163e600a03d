package main

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

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
		Service: cosv1.WriteSideHandlerService_ServiceDesc.ServiceName,
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, want SERVING", resp.GetStatus())
	}
	// InvalidArgument (not Unimplemented) proves the write handler is served.
	_, err = cosv1.NewWriteSideHandlerServiceClient(conn).HandleCommand(context.Background(), &cosv1.HandleCommandRequest{})
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Errorf("HandleCommand without command: %v, want InvalidArgument", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}
