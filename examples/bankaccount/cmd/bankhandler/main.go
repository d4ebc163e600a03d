// Command bankhandler serves the bank-account example's write handler, the gRPC service
// chief-of-state calls for every command and event. Point COS_WRITE_SIDE_HOST and COS_WRITE_SIDE_PORT
// at its -addr.
package main

import (
	"github.com/cosnats/cosnats/examples/bankaccount/grpcserve"
	"github.com/cosnats/cosnats/examples/bankaccount/writeside"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

var server = grpcserve.Server{
	Name:        "bankhandler",
	Service:     cosv1.WriteSideHandlerService_ServiceDesc.ServiceName,
	AddrEnv:     "BANK_HANDLER_ADDR",
	DefaultAddr: "127.0.0.1:50051",
	Register:    writeside.New().Register,
}

func main() { server.Main() }
