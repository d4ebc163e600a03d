package command

import (
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

func TestEventsOf(t *testing.T) {
	a := &anypb.Any{TypeUrl: "type.googleapis.com/x.A"}
	b := &anypb.Any{TypeUrl: "type.googleapis.com/x.B"}
	cases := []struct {
		resp *cospb.HandleCommandResponse
		want int
	}{
		{&cospb.HandleCommandResponse{}, 0},
		{&cospb.HandleCommandResponse{Event: a}, 1},
		{&cospb.HandleCommandResponse{Event: a, Events: []*anypb.Any{b, b}}, 2},
		{&cospb.HandleCommandResponse{Events: []*anypb.Any{{}}}, 0},
		{&cospb.HandleCommandResponse{Event: &anypb.Any{}}, 0},
	}
	for i, c := range cases {
		if got := eventsOf(c.resp); len(got) != c.want {
			t.Errorf("case %d: %d events, want %d", i, len(got), c.want)
		}
	}
	if got := eventsOf(cases[2].resp); got[0] != b {
		t.Error("events must win over the deprecated event")
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	md := metadata.Pairs("x-a", "1", "x-a", "2", "x-b-bin", "\x00\x01", "x-c", "no")
	hs := PickHeaders(md, []string{"x-a", "x-b-bin", "x-missing"})
	if len(hs) != 3 || hs[0].GetStringValue() != "1" || hs[1].GetStringValue() != "2" || string(hs[2].GetBytesValue()) != "\x00\x01" {
		t.Fatalf("picked %v", hs)
	}
	back := HeadersToMetadata(hs)
	if v := back.Get("x-a"); len(v) != 2 || v[1] != "2" {
		t.Fatalf("x-a %v", v)
	}
	if v := back.Get("x-b-bin"); len(v) != 1 || v[0] != "\x00\x01" {
		t.Fatalf("x-b-bin %v", v)
	}
}

func TestTypeNameAndCommandID(t *testing.T) {
	if TypeName("type.googleapis.com/a.b.C") != "a.b.C" || TypeName("a.b.C") != "a.b.C" {
		t.Fatal("TypeName")
	}
	for _, ok := range []string{"a", "0b7c7d9e-3c55-4c1f-9a4e-1f0e2d3c4b5a", "x:y/z"} {
		if err := ValidateCommandID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "é", string(make([]byte, 129))} {
		if err := ValidateCommandID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
