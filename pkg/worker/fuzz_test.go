package worker

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
)

// FuzzCommandRequest feeds arbitrary bytes and subjects to what a worker does with a message on a
// command subject (any NATS client may publish there): decoded and checked, or refused with
// INVALID_ARGUMENT — never a panic.
func FuzzCommandRequest(f *testing.F) {
	lay := layout.Default()
	cmd, _ := anypb.New(wrapperspb.String("add:1"))
	good, _ := proto.Marshal(&natspb.CommandRequest{EntityId: "a.b", Command: cmd, CommandId: "c-1"})
	k, _ := entity.NewKey("a.b", 9)
	f.Add(good, lay.CommandSubject(k))
	f.Add(good, "cos.cmd.1.other")
	f.Add([]byte{0x0a, 0xff}, "cos.cmd.0.x")
	w := &Worker{cfg: Config{Layout: lay, NumShards: 9, MaxCommandBytes: 1 << 10}}
	f.Fuzz(func(t *testing.T, data []byte, subject string) {
		req, err := decode(data)
		if err == nil {
			_, err = w.check(subject, req)
		}
		if err != nil && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("error %v is not INVALID_ARGUMENT", err)
		}
	})
}
