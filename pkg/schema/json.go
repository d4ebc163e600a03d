package schema

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TypeURLPrefix is the prefix of the type URLs this project builds (as anypb.New does).
const TypeURLPrefix = "type.googleapis.com/"

// AnyFromJSON decodes a message of type name from protobuf JSON into an Any. Unknown fields are an
// error: a misspelt field must not silently become a default value.
func (r *Resolver) AnyFromJSON(ctx context.Context, name string, data []byte) (*anypb.Any, error) {
	mt, err := r.Find(ctx, name)
	if err != nil {
		return nil, err
	}
	m := mt.New().Interface()
	if err := (protojson.UnmarshalOptions{Resolver: r}).Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("JSON is not a valid %s: %w", name, err)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", name, err)
	}
	return &anypb.Any{TypeUrl: TypeURLPrefix + string(mt.Descriptor().FullName()), Value: b}, nil
}

// ToJSON renders m as protobuf JSON, resolving the types inside its Any fields (states, events,
// error details). A type no source knows makes it fail: use the protobuf encoding then.
func (r *Resolver) ToJSON(m proto.Message) ([]byte, error) {
	return protojson.MarshalOptions{Resolver: r}.Marshal(m)
}
