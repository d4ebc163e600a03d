// Command bankreadside serves the bank-account example's read-side handler, the gRPC service
// chief-of-state calls for every persisted event. It keeps account balances in memory and logs each
// event. Set COS_READ_SIDE_ENABLED=true and point a read side's COS_READ_SIDE_CONFIG__HOST__<ID> and
// COS_READ_SIDE_CONFIG__PORT__<ID> at its -addr.
package main

import (
	"log/slog"

	"github.com/cosnats/cosnats/examples/bankaccount/grpcserve"
	"github.com/cosnats/cosnats/examples/bankaccount/readside"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

var server = grpcserve.Server{
	Name:        "bankreadside",
	Service:     cosv1.ReadSideHandlerService_ServiceDesc.ServiceName,
	AddrEnv:     "BANK_READSIDE_ADDR",
	DefaultAddr: "127.0.0.1:50052",
	Register:    readside.New(slog.Default()).Register,
}

func main() { server.Main() }
