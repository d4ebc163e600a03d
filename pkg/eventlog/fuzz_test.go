package eventlog

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// FuzzDecodeHead reads back arbitrary stored messages (an event stream anyone could have written to
// before permissions were set): an entity head or ErrCorrupt, never a panic.
func FuzzDecodeHead(f *testing.F) {
	good, _ := proto.Marshal(&cospb.EventWrapper{Meta: &cospb.MetaData{EntityId: "e", RevisionNumber: 3}})
	f.Add(good, "c-1", "")
	f.Add(good, "c-2", Recent{}.Push("c-1", 4, 16).String())
	f.Add([]byte{0xff, 0x01}, "", "x:y")
	f.Add([]byte{}, "", "c-1:1,c-2:notanumber")
	f.Fuzz(func(t *testing.T, data []byte, commandID, recent string) {
		h := nats.Header{}
		h.Set(HeaderCommandID, commandID)
		h.Set(HeaderRecent, recent)
		head, err := decodeHead(&jetstream.RawStreamMsg{Sequence: 9, Header: h, Data: data})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if head.Seq != 9 {
			t.Fatalf("head at %d", head.Seq)
		}
		// What was parsed prints back to something that parses the same.
		again, err := ParseRecent(head.Recent.String())
		if err != nil || again.String() != head.Recent.String() {
			t.Fatalf("recent %q does not round-trip: %q %v", head.Recent.String(), again.String(), err)
		}
	})
}
