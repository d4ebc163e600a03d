// Package schema finds the protobuf message types of an application (its commands, events and states)
// at run time, so that commands can arrive as JSON and outcomes leave as JSON: from a descriptor-set
// file (protoc --include_imports --descriptor_set_out) and from the write handler's gRPC server
// reflection. The types compiled into this program (well-known types, google.rpc error details, this
// project's messages) are found first.
package schema

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	// google.rpc error details (BadRequest, ErrorInfo, ...) that handlers attach to their errors.
	_ "google.golang.org/genproto/googleapis/rpc/errdetails"
)

// ErrUnknownType marks a message name no source knows.
var ErrUnknownType = errors.New("unknown message type")

// Resolver finds message types by full name or type URL. It implements the resolver interfaces of
// protojson (and of anypb), so it can be used as protojson.MarshalOptions.Resolver. Safe for concurrent
// use. The zero value is not usable: build one with New.
type Resolver struct {
	files *protoregistry.Files // from the descriptor-set file; nil when none
	refl  *reflector           // nil when no reflection source

	mu    sync.Mutex
	types map[protoreflect.FullName]protoreflect.MessageType
}

// Options are the sources of a Resolver besides the compiled-in types.
type Options struct {
	// DescriptorSet is the path of a serialized google.protobuf.FileDescriptorSet; "" for none.
	DescriptorSet string
	// Reflection, when set, is a connection to a gRPC server with the reflection service (the write
	// handler); types are asked for on first use and remembered.
	Reflection grpc.ClientConnInterface
	// Timeout bounds one reflection lookup; 0 = 5 s.
	Timeout time.Duration
}

// New builds a Resolver. Only an unreadable or invalid descriptor set is an error; an unreachable
// reflection server shows up later, as lookups that fail.
func New(opts Options) (*Resolver, error) {
	r := &Resolver{types: map[protoreflect.FullName]protoreflect.MessageType{}}
	if opts.DescriptorSet != "" {
		files, err := ReadDescriptorSet(opts.DescriptorSet)
		if err != nil {
			return nil, err
		}
		r.files = files
	}
	if opts.Reflection != nil {
		t := opts.Timeout
		if t <= 0 {
			t = 5 * time.Second
		}
		r.refl = &reflector{conn: opts.Reflection, timeout: t, protos: map[string]*descriptorpb.FileDescriptorProto{}}
	}
	return r, nil
}

// ReadDescriptorSet loads a FileDescriptorSet file into a registry.
func ReadDescriptorSet(path string) (*protoregistry.Files, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("descriptor set: %w", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("descriptor set %s is not a serialized FileDescriptorSet: %w", path, err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("descriptor set %s (build it with protoc --include_imports): %w", path, err)
	}
	return files, nil
}

// FindMessageByName implements protoregistry.MessageTypeResolver.
func (r *Resolver) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	return r.find(context.Background(), name)
}

// FindMessageByURL implements protoregistry.MessageTypeResolver.
func (r *Resolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	return r.find(context.Background(), protoreflect.FullName(url[strings.LastIndexByte(url, '/')+1:]))
}

// FindExtensionByName implements protoregistry.ExtensionTypeResolver (compiled-in extensions only).
func (r *Resolver) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(field)
}

// FindExtensionByNumber implements protoregistry.ExtensionTypeResolver (compiled-in extensions only).
func (r *Resolver) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(message, field)
}

// Find returns the type of a full message name, asking the reflection server within ctx if needed.
func (r *Resolver) Find(ctx context.Context, name string) (protoreflect.MessageType, error) {
	name = strings.TrimSpace(name)
	if !protoreflect.FullName(name).IsValid() {
		return nil, fmt.Errorf("%q is not a full protobuf message name (like bankaccount.v1.Credit)", name)
	}
	return r.find(ctx, protoreflect.FullName(name))
}

func (r *Resolver) find(ctx context.Context, name protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(name); err == nil {
		return mt, nil
	}
	r.mu.Lock()
	mt, ok := r.types[name]
	r.mu.Unlock()
	if ok {
		return mt, nil
	}
	if r.files != nil {
		if d, err := r.files.FindDescriptorByName(name); err == nil {
			if md, ok := d.(protoreflect.MessageDescriptor); ok {
				return r.remember(name, dynamicpb.NewMessageType(md)), nil
			}
		}
	}
	if r.refl != nil {
		md, err := r.refl.message(ctx, name)
		if err != nil {
			return nil, err
		}
		return r.remember(name, dynamicpb.NewMessageType(md)), nil
	}
	return nil, fmt.Errorf("%w %s: give the write handler's descriptors (a descriptor-set file, or gRPC reflection on the handler)", ErrUnknownType, name)
}

func (r *Resolver) remember(name protoreflect.FullName, mt protoreflect.MessageType) protoreflect.MessageType {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.types[name]; ok {
		return old
	}
	r.types[name] = mt
	return mt
}

// reflector asks a gRPC reflection server for the file that defines a symbol, and for the files it
// imports, and builds descriptors from them.
type reflector struct {
	conn    grpc.ClientConnInterface
	timeout time.Duration

	mu     sync.Mutex // one lookup at a time: lookups are rare (once per type)
	protos map[string]*descriptorpb.FileDescriptorProto
	files  *protoregistry.Files
	missed map[protoreflect.FullName]time.Time // names the server did not know, and when
}

// retryUnknownAfter is how long a name the server did not know is not asked for again (a handler
// deployed later may know it).
const retryUnknownAfter = 10 * time.Second

func (f *reflector) message(ctx context.Context, name protoreflect.FullName) (protoreflect.MessageDescriptor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if md, ok := f.lookup(name); ok {
		return md, nil
	}
	if t, ok := f.missed[name]; ok && time.Since(t) < retryUnknownAfter {
		return nil, fmt.Errorf("%w %s: the write handler's reflection service does not know it", ErrUnknownType, name)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if err := f.fetch(ctx, name); err != nil {
		if errors.Is(err, ErrUnknownType) {
			if f.missed == nil {
				f.missed = map[protoreflect.FullName]time.Time{}
			}
			f.missed[name] = time.Now()
		}
		return nil, err
	}
	if md, ok := f.lookup(name); ok {
		return md, nil
	}
	return nil, fmt.Errorf("%w %s: the write handler's reflection service does not define it as a message", ErrUnknownType, name)
}

func (f *reflector) lookup(name protoreflect.FullName) (protoreflect.MessageDescriptor, bool) {
	if f.files == nil {
		return nil, false
	}
	d, err := f.files.FindDescriptorByName(name)
	if err != nil {
		return nil, false
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	return md, ok
}

// fetch loads the file defining name and every file it depends on, then rebuilds the registry.
func (f *reflector) fetch(ctx context.Context, name protoreflect.FullName) error {
	stream, err := rpb.NewServerReflectionClient(f.conn).ServerReflectionInfo(ctx)
	if err != nil {
		return fmt.Errorf("reflection on the write handler: %w", err)
	}
	defer func() { _ = stream.CloseSend() }()
	ask := func(req *rpb.ServerReflectionRequest) error {
		if err := stream.Send(req); err != nil {
			err = recvErr(stream, err)
			if status.Code(err) == codes.Unimplemented {
				return fmt.Errorf("%w %s: the write handler does not serve gRPC reflection; give its descriptors in a file (COS_WRITE_SIDE_DESCRIPTORS)", ErrUnknownType, name)
			}
			return fmt.Errorf("reflection on the write handler: %w", err)
		}
		resp, err := stream.Recv()
		if status.Code(err) == codes.Unimplemented {
			return fmt.Errorf("%w %s: the write handler does not serve gRPC reflection; give its descriptors in a file (COS_WRITE_SIDE_DESCRIPTORS)", ErrUnknownType, name)
		}
		if err != nil {
			return fmt.Errorf("reflection on the write handler: %w", err)
		}
		if e := resp.GetErrorResponse(); e != nil {
			if codes.Code(e.GetErrorCode()) == codes.NotFound {
				return fmt.Errorf("%w %s: %s", ErrUnknownType, name, e.GetErrorMessage())
			}
			return fmt.Errorf("reflection on the write handler: %s", e.GetErrorMessage())
		}
		for _, raw := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
			var fd descriptorpb.FileDescriptorProto
			if err := proto.Unmarshal(raw, &fd); err != nil {
				return fmt.Errorf("reflection on the write handler sent an undecodable file: %w", err)
			}
			if _, ok := f.protos[fd.GetName()]; !ok {
				f.protos[fd.GetName()] = &fd
			}
		}
		return nil
	}
	if err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: string(name)}}); err != nil {
		return err
	}
	// Servers usually send the imports along; ask for any that are missing.
	for missing := f.missingDeps(); len(missing) > 0; missing = f.missingDeps() {
		for _, file := range missing {
			if err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: file}}); err != nil {
				return err
			}
			if _, ok := f.protos[file]; !ok {
				return fmt.Errorf("reflection on the write handler did not send %s", file)
			}
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range f.protos {
		set.File = append(set.File, fd)
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return fmt.Errorf("descriptors from the write handler's reflection: %w", err)
	}
	f.files = files
	return nil
}

func (f *reflector) missingDeps() []string {
	var out []string
	seen := map[string]bool{}
	for _, fd := range f.protos {
		for _, dep := range fd.GetDependency() {
			if _, ok := f.protos[dep]; !ok && !seen[dep] {
				seen[dep] = true
				out = append(out, dep)
			}
		}
	}
	return out
}

// recvErr gives the stream's real error when Send failed with io.EOF (the server ended the stream).
func recvErr(stream rpb.ServerReflection_ServerReflectionInfoClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, rerr := stream.Recv(); rerr != nil {
		if _, ok := status.FromError(rerr); ok {
			return rerr
		}
	}
	return err
}
