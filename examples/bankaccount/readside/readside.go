// Package readside is the bank-account example's read-side handler: the
// ReadSideHandlerService that chief-of-state calls once per persisted event
// for every configured read side. It keeps an in-memory projection of each
// account's balance and logs every event it applies.
//
// Delivery is at least once and in revision order per entity, so the handler
// is idempotent (a revision at or below the one already applied is
// acknowledged and ignored) and it reports gaps (a revision more than one
// past the last applied one) with a warning and a counter. Because
// chief-of-state sends the resulting state with every event, the projection
// takes the balance from that state and never re-folds events: a gap is
// noticed but does not make the balance wrong.
//
// The projection is keyed by account id only. If several read sides point at
// the same Handler, each event is applied once and the other deliveries are
// acknowledged as duplicates.
package readside

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	bankv1 "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// Metadata keys chief-of-state sets on every HandleReadSide call.
const (
	MetadataEntityID = "x-cos-entity-id"
	MetadataEventTag = "x-cos-event-tag" // the shard number, in decimal
)

// Handler serves chief_of_state.v1.ReadSideHandlerService for bank accounts.
// It is safe for concurrent use: chief-of-state calls it from several shards
// at once.
type Handler struct {
	cosv1.UnimplementedReadSideHandlerServiceServer

	log *slog.Logger

	mu       sync.Mutex
	accounts map[string]account
	events   int
	gaps     int
}

// account is one row of the projection.
type account struct {
	balance  int64
	revision uint32
}

// New returns a Handler with an empty projection that logs to log
// (slog.Default() if nil).
func New(log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{log: log, accounts: make(map[string]account)}
}

// Register adds the handler to s.
func (h *Handler) Register(s *grpc.Server) {
	cosv1.RegisterReadSideHandlerServiceServer(s, h)
}

// HandleReadSide applies one event to the projection. It replies
// Successful=false only for a request it can never apply (no entity id,
// revision 0, a state that is not a BankAccount), so that chief-of-state's
// failure policy for the read side decides what happens next; it never
// returns an error.
func (h *Handler) HandleReadSide(ctx context.Context, req *cosv1.HandleReadSideRequest) (*cosv1.HandleReadSideResponse, error) {
	mdEntity, tag := incoming(ctx)
	meta := req.GetMeta()
	id, rev := meta.GetEntityId(), meta.GetRevisionNumber()
	log := h.log.With(
		"read_side_id", req.GetReadSideId(),
		"entity", id,
		"revision", rev,
		"event", shortType(req.GetEvent().GetTypeUrl()),
		"tag", tag,
	)
	if mdEntity != "" && mdEntity != id {
		log.Warn("readside: x-cos-entity-id differs from meta.entity_id", "metadata_entity", mdEntity)
	}
	if id == "" || rev == 0 {
		log.Error("readside: rejected event without entity id or revision")
		return reply(false), nil
	}
	acc := &bankv1.BankAccount{}
	if !req.GetState().MessageIs(acc) {
		log.Error("readside: rejected event: state is not a BankAccount", "state_type", req.GetState().GetTypeUrl())
		return reply(false), nil
	}
	if err := req.GetState().UnmarshalTo(acc); err != nil {
		log.Error("readside: rejected event: malformed BankAccount state", "err", err)
		return reply(false), nil
	}

	h.mu.Lock()
	prev, seen := h.accounts[id]
	if seen && rev <= prev.revision {
		h.mu.Unlock()
		log.Debug("readside: duplicate ignored", "applied_revision", prev.revision)
		return reply(true), nil
	}
	gap := seen && rev > prev.revision+1
	if gap {
		h.gaps++
	}
	h.accounts[id] = account{balance: acc.GetBalance(), revision: rev}
	h.events++
	h.mu.Unlock()

	if gap {
		log.Warn("readside: revision gap, events were missed", "applied_revision", prev.revision, "missing", rev-prev.revision-1)
	}
	log.Info("readside: event applied", "balance", acc.GetBalance())
	return reply(true), nil
}

// Balance returns the projected balance of an account and the revision it
// reflects; ok is false for an account never seen.
func (h *Handler) Balance(accountID string) (balance int64, revision uint32, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	a, ok := h.accounts[accountID]
	return a.balance, a.revision, ok
}

// Events returns the number of events applied, duplicates excluded.
func (h *Handler) Events() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.events
}

// Gaps returns the number of revision gaps noticed.
func (h *Handler) Gaps() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gaps
}

// incoming returns the entity id and event tag chief-of-state sent as gRPC
// metadata, empty when absent.
func incoming(ctx context.Context) (entity, tag string) {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return first(MetadataEntityID), first(MetadataEventTag)
}

// shortType is the part of a type URL after the last '/', the message's full
// name (e.g. bankaccount.v1.AccountCredited).
func shortType(url string) string {
	return url[strings.LastIndexByte(url, '/')+1:]
}

func reply(ok bool) *cosv1.HandleReadSideResponse {
	return &cosv1.HandleReadSideResponse{Successful: ok}
}
