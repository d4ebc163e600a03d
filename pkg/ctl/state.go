package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/schema"
)

// commandIDKey is the metadata key of a command's idempotency key (request and response header).
const commandIDKey = "x-cos-command-id"

// typesHelp says where the application's message types come from.
const typesHelp = `The application's message types come from --descriptors (a FileDescriptorSet: protoc
--include_imports --descriptor_set_out=FILE ...) and/or gRPC reflection on the write handler
(--handler). A state or event type neither knows is printed as type_url and base64 value, with a
warning on stderr.`

var processCommand = &command{
	name:    "process",
	args:    "ENTITY_ID TYPE JSON [--command-id ID] [--descriptors FILE] [--handler HOST:PORT]",
	summary: "send a command (ProcessCommand); print the resulting state and meta",
	help: `Sends a command to an entity with ChiefOfStateService/ProcessCommand. TYPE is the command's full
protobuf message name (bankaccount.v1.Credit) and JSON its protobuf JSON form (field names as in the
.proto or lowerCamelCase; 64-bit numbers may be strings; unknown fields are an error), converted
with the application's message types.

` + typesHelp + `

--command-id sets the idempotency key (metadata x-cos-command-id): a retry with the same id is
answered with the original result instead of running again (within the entity's idempotency window,
see the README's "Command ids"). Without it the gateway makes one up; it is printed as command_id.
Exit 5 means the outcome is unknown (UNKNOWN, or the call was cut off after it was sent): retry with
the same --command-id to learn it.`,
	example: `cosctl process acc-1 bankaccount.v1.OpenAccount '{"owner":"alice","initialBalance":"1000"}' --handler 127.0.0.1:50051
cosctl process acc-1 bankaccount.v1.Credit '{"amount":"250"}' --command-id pay-42 --descriptors bank.pb`,
	output: "json",
	setup: func(fs *flag.FlagSet, c *call) func(context.Context, []string) error {
		var sf schemaFlags
		sf.register(fs, c.getenv)
		commandID := fs.String("command-id", "", "idempotency key `ID` of the command (metadata x-cos-command-id)")
		return func(ctx context.Context, args []string) error {
			if len(args) != 3 {
				return usagef(c.cmd, "process wants ENTITY_ID TYPE JSON, got %d argument(s)", len(args))
			}
			return c.process(ctx, &sf, args[0], args[1], []byte(args[2]), *commandID)
		}
	},
}

var getCommand = &command{
	name:    "get",
	args:    "ENTITY_ID [--descriptors FILE] [--handler HOST:PORT]",
	summary: "the entity's current state and meta (GetState)",
	help: `Reads an entity's state after its last event with ChiefOfStateService/GetState (the write handler
is not called). An entity with no event is NOT_FOUND (exit 4).

` + typesHelp,
	example: `cosctl get acc-1 --handler 127.0.0.1:50051
cosctl get acc-1 --output table`,
	output: "json",
	setup: func(fs *flag.FlagSet, c *call) func(context.Context, []string) error {
		var sf schemaFlags
		sf.register(fs, c.getenv)
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef(c.cmd, "get wants ENTITY_ID, got %d argument(s)", len(args))
			}
			return c.get(ctx, &sf, args[0])
		}
	},
}

func (c *call) process(ctx context.Context, sf *schemaFlags, id, typeName string, body []byte, commandID string) error {
	r, closeResolver, err := sf.resolver(c)
	if err != nil {
		return err
	}
	defer closeResolver()
	cmd, err := c.commandAny(ctx, r, typeName, body)
	if err != nil {
		return err
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	if commandID != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, commandIDKey, commandID)
	}
	var header, trailer metadata.MD
	var sentTo peer.Peer
	resp, err := cospb.NewChiefOfStateServiceClient(conn).ProcessCommand(ctx,
		&cospb.ProcessCommandRequest{EntityId: id, Command: cmd},
		grpc.Header(&header), grpc.Trailer(&trailer), grpc.Peer(&sentTo))
	usedID := first(header.Get(commandIDKey), trailer.Get(commandIDKey), commandID)
	if err != nil {
		return processError(err, ctx.Err() != nil, sentTo.Addr != nil, usedID)
	}
	return c.printState(newRenderer(r, c.stderr), resp.GetState(), resp.GetMeta(), usedID)
}

// processError gives ProcessCommand's failures their exit codes. UNKNOWN is the gateway saying the
// outcome is unknown; a call that our own deadline or a signal cut off after it reached the gateway
// (sent: it had a transport stream) is unknown too: the command may have been applied.
func processError(err error, ourDeadline, sent bool, commandID string) error {
	st := status.Convert(err)
	unknown := st.Code() == codes.Unknown ||
		(sent && ourDeadline && (st.Code() == codes.DeadlineExceeded || st.Code() == codes.Canceled))
	if !unknown {
		return err
	}
	retry := "retry with the same --command-id to learn the outcome"
	if commandID != "" {
		retry = fmt.Sprintf("retry with --command-id %s to learn the outcome", commandID)
	}
	return &exitError{code: ExitUnknown, msg: fmt.Sprintf("%s (the command may or may not have been applied: %s)", statusLine(st), retry)}
}

// commandAny converts the command's JSON into an Any of typeName. A name that is not one, a type no
// source knows and JSON that does not fit it are usage errors; a reflection server that cannot be
// reached is reported with its own gRPC code.
func (c *call) commandAny(ctx context.Context, r *schema.Resolver, typeName string, body []byte) (*anypb.Any, error) {
	if !protoreflect.FullName(typeName).IsValid() {
		return nil, usagef(c.cmd, "%q is not a full protobuf message name (like bankaccount.v1.Credit)", typeName)
	}
	fctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	if _, err := r.Find(fctx, typeName); err != nil {
		if errors.Is(err, schema.ErrUnknownType) {
			return nil, usagef(c.cmd, "%v", err)
		}
		return nil, err // a status when reflection failed: its code says why
	}
	a, err := r.AnyFromJSON(fctx, typeName, body)
	if err != nil {
		return nil, usagef(c.cmd, "%v", err)
	}
	return a, nil
}

func (c *call) get(ctx context.Context, sf *schemaFlags, id string) error {
	r, closeResolver, err := sf.resolver(c)
	if err != nil {
		return err
	}
	defer closeResolver()
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	resp, err := cospb.NewChiefOfStateServiceClient(conn).GetState(ctx, &cospb.GetStateRequest{EntityId: id})
	if err != nil {
		return err
	}
	return c.printState(newRenderer(r, c.stderr), resp.GetState(), resp.GetMeta(), "")
}

// first returns the first value of the lists, else def.
func first(header, trailer []string, def string) string {
	if len(header) > 0 {
		return header[0]
	}
	if len(trailer) > 0 {
		return trailer[0]
	}
	return def
}
