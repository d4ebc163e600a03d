package readside_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/node"
)

// rsys is a NATS server, a gateway+worker node, read-side recorders and projector nodes started on demand.
type rsys struct {
	t       *testing.T
	cfg     config.Config
	url     string
	client  cospb.ChiefOfStateServiceClient
	manager cospb.ReadSideManagerServiceClient
	status  natspb.ReadSideStatusServiceClient
	js      jetstream.JetStream
	recs    map[string]*costest.Recorder
}

// readSide configures a read side served by a new recorder.
func (s *rsys) readSide(id string, mutate func(*config.ReadSide)) *costest.Recorder {
	rec := costest.NewRecorder()
	port := costest.ServeGRPC(s.t, rec.Register)
	rs := config.ReadSide{ID: id, Host: "127.0.0.1", Port: port, AutoStart: true, Enabled: true, Timeout: 5 * time.Second, MaxInFlight: config.DefaultReadSideMaxInFlight}
	if mutate != nil {
		mutate(&rs)
	}
	s.cfg.ReadSides = append(s.cfg.ReadSides, rs)
	s.recs[id] = rec
	return rec
}

func newRSys(t *testing.T) *rsys {
	t.Helper()
	srv := costest.StartNATS(t)
	h := &costest.Counter{}
	port := costest.ServeGRPC(t, h.Register)
	cfg := costest.Config(t, srv.ClientURL(), port)
	cfg.ReadSideEnabled = true
	s := &rsys{t: t, cfg: cfg, url: srv.ClientURL(), recs: map[string]*costest.Recorder{}}
	_, s.js = costest.JetStream(t, srv)
	return s
}

// start runs the gateway+worker node (which serves the manager for the configured read sides).
func (s *rsys) start() {
	gw := costest.StartNode(s.t, s.cfg, node.Roles{Gateway: true, Worker: true})
	s.client = costest.Client(s.t, gw.GRPCAddr)
	conn, err := grpc.NewClient(gw.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = conn.Close() })
	s.manager = cospb.NewReadSideManagerServiceClient(conn)
	s.status = natspb.NewReadSideStatusServiceClient(conn)
}

func (s *rsys) projector() *costest.Node {
	return costest.StartNode(s.t, s.cfg, node.Roles{Projector: true})
}

func (s *rsys) write(id string, n int) {
	s.t.Helper()
	for range n {
		if _, err := s.client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: id, Command: costest.Cmd("add:1")}); err != nil {
			s.t.Fatalf("write %s: %v", id, err)
		}
	}
}

func (s *rsys) shard(id string) int {
	k, err := entity.NewKey(id, s.cfg.NumShards)
	if err != nil {
		s.t.Fatal(err)
	}
	return k.Shard
}

func (s *rsys) shardStatus(rs string, shard int) *natspb.ReadSideShardStatus {
	s.t.Helper()
	resp, err := s.status.GetReadSideStatus(context.Background(), &natspb.GetReadSideStatusRequest{ReadSideId: rs})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, st := range resp.GetShards() {
		if st.GetClusterShardNumber() == uint64(shard) {
			return st
		}
	}
	s.t.Fatalf("no status for %s/%d", rs, shard)
	return nil
}

// waitConsumers waits until the manager sees every shard of a read side (a projector made them).
func (s *rsys) waitConsumers(rs string) {
	s.t.Helper()
	costest.Eventually(s.t, 30*time.Second, "the consumers of "+rs, func() bool {
		resp, err := s.manager.GetLatestOffset(context.Background(), &cospb.GetLatestOffsetRequest{ReadSideId: rs})
		return err == nil && len(resp.GetOffsets()) == s.cfg.NumShards
	})
}

func allReceived(ids []string, n int) func(*costest.Recorder) bool {
	return func(r *costest.Recorder) bool {
		for _, id := range ids {
			if len(r.Received(id)) < n {
				return false
			}
		}
		return true
	}
}

// allReached is true once every entity's revisions 1..n have each been delivered (duplicates aside).
func allReached(ids []string, n uint32) func(*costest.Recorder) bool {
	return func(r *costest.Recorder) bool {
		for _, id := range ids {
			seen := make(map[uint32]bool)
			for _, rev := range r.Received(id) {
				seen[rev] = true
			}
			for rev := uint32(1); rev <= n; rev++ {
				if !seen[rev] {
					return false
				}
			}
		}
		return true
	}
}

// 200 entities × 20 events written concurrently reach each of two read sides in revision order, with
// COS's metadata, and the offsets end at each shard's last event. The guarantee is at least once: an
// event is delivered again only after a delivery session restarted (the projector counts them), so with
// no restart every event arrives exactly once.
func TestEveryEventReachesEveryReadSideInOrder(t *testing.T) {
	s := newRSys(t)
	alpha, beta := s.readSide("alpha", nil), s.readSide("beta", nil)
	s.start()
	p := s.projector()
	const entities, events = 200, 20
	ids := make([]string, entities)
	for i := range ids {
		ids[i] = fmt.Sprintf("acct %d.é", i) // needs the token encoding and a percent-encoded header
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.write(id, events)
		}()
	}
	wg.Wait()
	for _, rec := range []*costest.Recorder{alpha, beta} {
		rec.WaitFor(t, 2*time.Minute, "every event", allReached(ids, events)) // a deadline for a loaded machine (-race, other packages)
		got := make(map[string][]uint32, len(ids))
		for _, id := range ids {
			got[id] = rec.Received(id)
		}
		exact := p.Projector.Restarts() == 0 // read after the deliveries: none of them followed a restart
		for _, id := range ids {
			costest.InOrder(t, id, got[id], events, exact)
		}
		if !exact {
			t.Logf("%d delivery sessions restarted: duplicates allowed (%d deliveries for %d events)", p.Projector.Restarts(), rec.Total(), entities*events)
		}
		gotID, tag := rec.Metadata(ids[7])
		if gotID != "acct%207.%C3%A9" || tag != fmt.Sprint(s.shard(ids[7])) {
			t.Fatalf("metadata x-cos-entity-id=%q x-cos-event-tag=%q", gotID, tag)
		}
	}
	// Offsets: the stream sequence of each shard's last event, once the acks are applied.
	str, err := s.js.Stream(context.Background(), layout.Default().EventStream())
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]uint64{}
	for shard := range s.cfg.NumShards {
		m, err := str.GetLastMsgForSubject(context.Background(), layout.Default().ShardEventSubjects(shard))
		if err == nil {
			want[uint64(shard)] = m.Sequence
		}
	}
	costest.Eventually(t, 10*time.Second, "offsets at each shard's last event", func() bool {
		resp, err := s.manager.GetLatestOffset(context.Background(), &cospb.GetLatestOffsetRequest{ReadSideId: "beta"})
		if err != nil || len(resp.GetOffsets()) != s.cfg.NumShards {
			return false
		}
		for _, o := range resp.GetOffsets() {
			if o.GetOffset() != want[o.GetClusterShardNumber()] {
				return false
			}
		}
		return true
	})
}

// A read side added after the events were written receives the whole history.
func TestNewReadSideGetsTheFullHistory(t *testing.T) {
	s := newRSys(t)
	s.start()
	s.write("early", 5)
	late := s.readSide("late", nil)
	s.projector()
	late.WaitFor(t, 30*time.Second, "history", allReceived([]string{"early"}, 5))
	costest.InOrder(t, "early", late.Received("early"), 5, true)
}

// The projector serving the shards is stopped mid-stream; a standby replica takes over and nothing is
// missed or reordered (a redelivery of the event in flight is allowed).
func TestProjectorFailover(t *testing.T) {
	s := newRSys(t)
	// Fewer events in flight than a shard holds: the standby must not deliver later events of an
	// entity while earlier ones are still unacknowledged from the first replica.
	rec := s.readSide("alpha", func(rs *config.ReadSide) { rs.MaxInFlight = 4 })
	s.start()
	ids := make([]string, 30)
	for i := range ids {
		ids[i] = fmt.Sprintf("f-%d", i)
		s.write(ids[i], 10)
	}
	// Once 100 events are in, the read side holds every call until the gate opens (or the call ends).
	gate := make(chan struct{})
	rec.Fail = func(ctx context.Context, _ *cospb.HandleReadSideRequest) (bool, error) {
		if rec.Total() < 100 {
			return true, nil
		}
		select {
		case <-gate:
			return true, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	a := s.projector()
	rec.WaitFor(t, 30*time.Second, "100 deliveries", func(r *costest.Recorder) bool { return r.Total() >= 100 })
	b := s.projector()
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	close(gate)
	rec.WaitFor(t, 60*time.Second, "every event after the failover", allReached(ids, 10))
	for _, id := range ids {
		costest.InOrder(t, id, rec.Received(id), 10, false)
	}
	if a.Projector.Delivered() == 0 || b.Projector.Delivered() == 0 {
		t.Fatalf("delivered: first replica %d, standby %d; both should have worked", a.Projector.Delivered(), b.Projector.Delivered())
	}
}
