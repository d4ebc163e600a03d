package node_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
)

// With COS_ADMIN_ADDRESS the operator's services answer only there: a client of the main port cannot
// pause, restart or skip a read side, and the admin port serves no commands.
func TestAdminListener(t *testing.T) {
	s := embedded(t, func(c *config.Config) { c.AdminAddress = "127.0.0.1:0" })
	if s.gateway.AdminAddr == "" || s.gateway.AdminAddr == s.gateway.GRPCAddr {
		t.Fatalf("admin address %q, main %q", s.gateway.AdminAddr, s.gateway.GRPCAddr)
	}
	ctx := context.Background()
	s.mustSend("a-1", "add:1")

	main := costest.Conn(t, s.gateway.GRPCAddr)
	_, err := cospb.NewReadSideManagerServiceClient(main).PauseReadSide(ctx, &cospb.PauseReadSideRequest{ReadSideId: "x"})
	wantCode(t, err, codes.Unimplemented, "")
	_, err = natspb.NewReadSideStatusServiceClient(main).GetReadSideStatus(ctx, &natspb.GetReadSideStatusRequest{})
	wantCode(t, err, codes.Unimplemented, "")
	_, err = natspb.NewIntakeServiceClient(main).GetIntakeStatus(ctx, &natspb.GetIntakeStatusRequest{})
	wantCode(t, err, codes.Unimplemented, "")
	refl, err := rpb.NewServerReflectionClient(main).ServerReflectionInfo(ctx)
	if err == nil {
		_ = refl.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
		_, err = refl.Recv()
	}
	wantCode(t, err, codes.Unimplemented, "")

	admin := costest.Conn(t, s.gateway.AdminAddr)
	if _, err := natspb.NewReadSideStatusServiceClient(admin).GetReadSideStatus(ctx, &natspb.GetReadSideStatusRequest{}); err != nil {
		t.Fatalf("status on the admin port: %v", err)
	}
	if st, err := natspb.NewIntakeServiceClient(admin).GetIntakeStatus(ctx, &natspb.GetIntakeStatusRequest{}); err != nil || !st.GetEnabled() {
		t.Fatalf("intake status on the admin port: %v %v", st, err)
	}
	_, err = cospb.NewReadSideManagerServiceClient(admin).PauseReadSide(ctx, &cospb.PauseReadSideRequest{ReadSideId: "nope"})
	wantCode(t, err, codes.NotFound, "")
	_, err = cospb.NewChiefOfStateServiceClient(admin).GetState(ctx, &cospb.GetStateRequest{EntityId: "a-1"})
	wantCode(t, err, codes.Unimplemented, "")
}
