// Package writeside is the bank-account example's write handler: the
// WriteSideHandlerService that chief-of-state calls to turn commands into
// events (HandleCommand) and to fold events into state (HandleEvent).
//
// The business rules live in the pure functions Decide and Evolve, so they can
// be read and tested without gRPC; the Handler methods only unpack and pack
// google.protobuf.Any values around them.
package writeside

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	bankv1 "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// ErrorDomain is the ErrorInfo domain of this example's business errors.
const ErrorDomain = "bankaccount.example"

// ReasonInsufficientFunds is the ErrorInfo reason of a rejected debit, so that
// callers can branch on it without parsing the message.
const ReasonInsufficientFunds = "INSUFFICIENT_FUNDS"

// Handler serves chief_of_state.v1.WriteSideHandlerService for bank accounts.
// It keeps no state of its own: chief-of-state sends the prior state with
// every call, so any number of replicas can serve the same accounts.
type Handler struct {
	cosv1.UnimplementedWriteSideHandlerServiceServer
}

// New returns a Handler.
func New() *Handler { return &Handler{} }

// Register adds the handler to s.
func (h *Handler) Register(s *grpc.Server) {
	cosv1.RegisterWriteSideHandlerServiceServer(s, h)
}

// HandleCommand validates a command against the prior state and replies with
// the events it produces (none for a no-op).
func (h *Handler) HandleCommand(_ context.Context, req *cosv1.HandleCommandRequest) (*cosv1.HandleCommandResponse, error) {
	cmd, err := unpack(req.GetCommand(), "command")
	if err != nil {
		return nil, err
	}
	meta := req.GetPriorEventMeta()
	// Revision 0 means "never persisted": the prior state is then Empty by
	// contract, so it is not even looked at.
	var state *bankv1.BankAccount
	if rev := meta.GetRevisionNumber(); rev != 0 {
		state, err = accountState(req.GetPriorState())
		if err != nil {
			return nil, err
		}
		if state == nil {
			return nil, status.Errorf(codes.InvalidArgument, "prior state missing at revision %d", rev)
		}
	}
	events, err := Decide(meta.GetEntityId(), state, cmd)
	if err != nil {
		return nil, err
	}
	resp := &cosv1.HandleCommandResponse{}
	for _, ev := range events {
		a, err := anypb.New(ev)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "pack event: %v", err)
		}
		// Field 2 (events), not the deprecated single event.
		resp.Events = append(resp.Events, a)
	}
	return resp, nil
}

// HandleEvent folds one event into the prior state.
func (h *Handler) HandleEvent(_ context.Context, req *cosv1.HandleEventRequest) (*cosv1.HandleEventResponse, error) {
	ev, err := unpack(req.GetEvent(), "event")
	if err != nil {
		return nil, err
	}
	state, err := accountState(req.GetPriorState())
	if err != nil {
		return nil, err
	}
	next, err := Evolve(req.GetEventMeta().GetEntityId(), state, ev)
	if err != nil {
		return nil, err
	}
	a, err := anypb.New(next)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "pack state: %v", err)
	}
	return &cosv1.HandleEventResponse{ResultingState: a}, nil
}

// Decide applies the business rules of one command. state is nil when the
// account has never been opened (revision 0). It returns the events to
// persist, none for a no-op, or a gRPC status error that chief-of-state hands
// unchanged to the caller.
func Decide(accountID string, state *bankv1.BankAccount, cmd proto.Message) ([]proto.Message, error) {
	switch c := cmd.(type) {
	case *bankv1.OpenAccount:
		if state != nil {
			return nil, status.Errorf(codes.AlreadyExists, "account %s already exists", accountID)
		}
		var bad []*errdetails.BadRequest_FieldViolation
		if strings.TrimSpace(c.GetOwner()) == "" {
			bad = append(bad, violation("owner", "owner must not be empty"))
		}
		if c.GetInitialBalance() < 0 {
			bad = append(bad, violation("initial_balance", "initial_balance must be >= 0"))
		}
		if len(bad) > 0 {
			return nil, withDetails(codes.InvalidArgument, "invalid OpenAccount", &errdetails.BadRequest{FieldViolations: bad})
		}
		return []proto.Message{&bankv1.AccountOpened{Owner: c.GetOwner(), InitialBalance: c.GetInitialBalance()}}, nil

	case *bankv1.Credit:
		if state == nil {
			return nil, notOpen(accountID)
		}
		amount := c.GetAmount()
		switch {
		case amount < 0:
			return nil, badAmount("amount must be >= 0")
		case amount == 0:
			return nil, nil
		case amount > math.MaxInt64-state.GetBalance():
			// An overflow would silently turn a rich account into a debtor.
			return nil, withDetails(codes.OutOfRange, "balance would overflow",
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{violation("amount", "amount would overflow the balance")}})
		}
		return []proto.Message{&bankv1.AccountCredited{Amount: amount}}, nil

	case *bankv1.Debit:
		if state == nil {
			return nil, notOpen(accountID)
		}
		amount, balance := c.GetAmount(), state.GetBalance()
		if amount <= 0 {
			return nil, badAmount("amount must be > 0")
		}
		if amount > balance {
			return nil, withDetails(codes.FailedPrecondition, "insufficient funds",
				&errdetails.ErrorInfo{
					Reason: ReasonInsufficientFunds,
					Domain: ErrorDomain,
					Metadata: map[string]string{
						"balance": strconv.FormatInt(balance, 10),
						"amount":  strconv.FormatInt(amount, 10),
					},
				},
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
					violation("amount", fmt.Sprintf("amount %d exceeds balance %d", amount, balance)),
				}})
		}
		return []proto.Message{&bankv1.AccountDebited{Amount: amount}}, nil

	case *bankv1.GetAccount:
		// A read through the write side: chief-of-state replies with the
		// current state when no event is returned.
		return nil, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "unknown command type %s", typeURL(cmd))
}

// Evolve returns the state after ev. state is nil for an account that was
// never opened. It never modifies state, since the caller may still hold it.
func Evolve(accountID string, state *bankv1.BankAccount, ev proto.Message) (*bankv1.BankAccount, error) {
	switch e := ev.(type) {
	case *bankv1.AccountOpened:
		if state != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "account %s is already open", accountID)
		}
		return &bankv1.BankAccount{AccountId: accountID, Owner: e.GetOwner(), Balance: e.GetInitialBalance()}, nil
	case *bankv1.AccountCredited:
		if state == nil {
			return nil, notOpen(accountID)
		}
		next := proto.CloneOf(state)
		next.Balance += e.GetAmount()
		return next, nil
	case *bankv1.AccountDebited:
		if state == nil {
			return nil, notOpen(accountID)
		}
		next := proto.CloneOf(state)
		next.Balance -= e.GetAmount()
		return next, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "unknown event type %s", typeURL(ev))
}

// unpack resolves an Any through the global registry. A nil or unresolvable
// Any is the caller's mistake, hence InvalidArgument.
func unpack(a *anypb.Any, what string) (proto.Message, error) {
	url := a.GetTypeUrl()
	if url == "" {
		return nil, status.Errorf(codes.InvalidArgument, "unknown %s type %q", what, url)
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		// Keep the "unknown ... type" prefix for both unregistered types and
		// undecodable bytes: either way the handler cannot understand it.
		return nil, status.Errorf(codes.InvalidArgument, "unknown %s type %s: %v", what, url, err)
	}
	return m, nil
}

// accountState decodes a prior state: nil for unset or google.protobuf.Empty
// (an account never opened), else it must be a BankAccount.
func accountState(a *anypb.Any) (*bankv1.BankAccount, error) {
	if a.GetTypeUrl() == "" || a.MessageIs((*emptypb.Empty)(nil)) {
		return nil, nil
	}
	acc := &bankv1.BankAccount{}
	if !a.MessageIs(acc) {
		return nil, status.Errorf(codes.InvalidArgument, "unexpected prior state type %s", a.GetTypeUrl())
	}
	if err := a.UnmarshalTo(acc); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "malformed prior state: %v", err)
	}
	return acc, nil
}

func typeURL(m proto.Message) string {
	if m == nil {
		return `""`
	}
	return "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
}

func notOpen(accountID string) error {
	return status.Errorf(codes.NotFound, "account %s is not open", accountID)
}

func badAmount(desc string) error {
	return withDetails(codes.InvalidArgument, "invalid amount",
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{violation("amount", desc)}})
}

func violation(field, desc string) *errdetails.BadRequest_FieldViolation {
	return &errdetails.BadRequest_FieldViolation{Field: field, Description: desc}
}

// withDetails builds a status error carrying machine-readable details, which
// chief-of-state forwards byte for byte in grpc-status-details-bin.
func withDetails(code codes.Code, msg string, details ...protoadapt.MessageV1) error {
	st := status.New(code, msg)
	if withD, err := st.WithDetails(details...); err == nil {
		st = withD
	}
	return st.Err()
}
