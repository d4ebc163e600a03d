package readside_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/internal/faultproxy"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/node"
)

// proxy puts a fault proxy in front of the test's NATS server.
func (s *rsys) proxy() *faultproxy.Proxy {
	s.t.Helper()
	px, err := faultproxy.Start("", s.url[len("nats://"):])
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(px.Close)
	return px
}

// projectorVia runs a projector that reaches NATS through url, with cfg changed by mutate.
func (s *rsys) projectorVia(url string, mutate func(*config.Config)) *costest.Node {
	cfg := s.cfg
	cfg.NATS.URL = url
	cfg.ReadSides = append([]config.ReadSide(nil), s.cfg.ReadSides...)
	if mutate != nil {
		mutate(&cfg)
	}
	return costest.StartNode(s.t, cfg, node.Roles{Projector: true})
}

func (s *rsys) eventSubject(id string) string {
	k, err := entity.NewKey(id, s.cfg.NumShards)
	if err != nil {
		s.t.Fatal(err)
	}
	return layout.Default().EventSubject(k)
}

// A delivery lost on its way to the projector, with no disconnect (as a slow-consumer drop loses it),
// is noticed at the next delivery: revision 3 is never handed over before revision 2.
func TestLostDeliveryIsNoticed(t *testing.T) {
	s := newRSys(t)
	s.cfg.NumShards = 1
	rec := s.readSide("rs", func(rs *config.ReadSide) { rs.MaxInFlight = 16 })
	s.start()
	px := s.proxy()
	s.projectorVia(px.URL(), nil)
	s.write("e", 1)
	rec.WaitFor(t, 30*time.Second, "revision 1", allReached([]string{"e"}, 1))
	px.DropNext(s.eventSubject("e"), 1)
	s.write("e", 2)
	rec.WaitFor(t, 30*time.Second, "revisions 2 and 3", allReached([]string{"e"}, 3))
	if px.Dropped() != 1 {
		t.Fatalf("the proxy dropped %d deliveries, want 1", px.Dropped())
	}
	costest.InOrder(t, "e", rec.Received("e"), 3, false)
	// The last delivery of a quiet shard is lost too: the server's heartbeat tells.
	px.DropNext(s.eventSubject("e"), 1)
	s.write("e", 1)
	rec.WaitFor(t, 30*time.Second, "revision 4", allReached([]string{"e"}, 4))
	costest.InOrder(t, "e", rec.Received("e"), 4, false)
}

// The projector's connections drop again and again (each reconnect far shorter than the pin's TTL)
// while events flow: no entity ever sees revision n+1 before revision n, and every event arrives.
func TestConnectionDropsKeepEachEntityInOrder(t *testing.T) {
	s := newRSys(t)
	s.cfg.NumShards = 2
	rec := s.readSide("rs", nil)
	s.start()
	px := s.proxy()
	s.projectorVia(px.URL(), nil)
	ids := entityIDs("d", 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.writeAll(ids, 15)
	}()
	for i := 0; i < 6; i++ {
		rec.WaitFor(t, 60*time.Second, "deliveries between drops", func(r *costest.Recorder) bool { return r.Total() >= 40*(i+1) })
		px.DropConnections()
	}
	<-done
	rec.WaitFor(t, 60*time.Second, "every event", allReached(ids, 15))
	for _, id := range ids {
		costest.InOrder(t, id, rec.Received(id), 15, false)
	}
}

// callLog records when each projector replica started read-side calls.
type callLog struct {
	mu     sync.Mutex
	starts map[string][]time.Time
}

func (l *callLog) add(who string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.starts[who] = append(l.starts[who], time.Now())
}

func (l *callLog) get(who string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.starts[who]...)
}

// tagged is the recorder served under a name, so calls tell which projector replica made them.
type tagged struct {
	cospb.UnimplementedReadSideHandlerServiceServer
	who    string
	rec    *costest.Recorder
	log    *callLog
	before func(context.Context) error
}

func (h tagged) HandleReadSide(ctx context.Context, req *cospb.HandleReadSideRequest) (*cospb.HandleReadSideResponse, error) {
	h.log.add(h.who)
	if h.before != nil {
		if err := h.before(ctx); err != nil {
			return nil, err
		}
	}
	return h.rec.HandleReadSide(ctx, req)
}

// A replica cut off from NATS (but not from the read side) stops calling the read side once its lease
// on the pin runs out, before the server can hand the shard to another replica: the two never call the
// read side for the shard at the same time, and the order per entity holds across the takeover.
func TestCutOffReplicaStopsBeforeTheTakeover(t *testing.T) {
	s := newRSys(t)
	s.cfg.NumShards = 1
	rec := s.readSide("rs", func(rs *config.ReadSide) { rs.MaxInFlight = 200 })
	log := &callLog{starts: map[string][]time.Time{}}
	portOf := map[string]int{}
	// Slow calls from the first replica to one entity: when it is cut off, it holds more fetched events
	// than it could deliver before the pin's TTL runs out.
	slow := func(ctx context.Context) error {
		t := time.NewTimer(100 * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	for _, who := range []string{"a", "b"} {
		h := tagged{who: who, rec: rec, log: log}
		if who == "a" {
			h.before = slow
		}
		portOf[who] = costest.ServeGRPC(t, func(g *grpc.Server) { cospb.RegisterReadSideHandlerServiceServer(g, h) })
	}
	s.start()
	ids := []string{"p"}
	s.write("p", 300)
	via := func(who string, px *faultproxy.Proxy) *costest.Node {
		return s.projectorVia(px.URL(), func(c *config.Config) { c.ReadSides[0].Port = portOf[who] })
	}
	pxA, pxB := s.proxy(), s.proxy()
	via("a", pxA)
	rec.WaitFor(t, 30*time.Second, "a first delivery", func(r *costest.Recorder) bool { return r.Total() > 0 })
	via("b", pxB)
	rec.WaitFor(t, 30*time.Second, "deliveries by a", func(r *costest.Recorder) bool { return r.Total() >= 5 })
	cut := time.Now()
	pxA.Blackhole()
	defer pxA.Heal()
	rec.WaitFor(t, 60*time.Second, "every event, after the takeover", allReached(ids, 300))
	a, b := log.get("a"), log.get("b")
	if len(b) == 0 {
		t.Fatal("the standby never delivered")
	}
	var lastA time.Time
	for _, at := range a {
		if at.After(lastA) {
			lastA = at
		}
	}
	t.Logf("cut-off replica: %d calls, the last %v after the cut; new owner: first call %v after the cut", len(a), lastA.Sub(cut), b[0].Sub(cut))
	if !lastA.Before(b[0]) {
		t.Fatalf("the cut-off replica called the read side %v after the cut, after the new owner's first call (%v after the cut)",
			lastA.Sub(cut), b[0].Sub(cut))
	}
	for _, id := range ids {
		costest.InOrder(t, id, rec.Received(id), 300, false)
	}
}

// PauseReadSide means pause: once it returns, no read-side call starts, not even for events the
// projector had already fetched; in-flight calls finish.
func TestPauseStopsWhatWasFetched(t *testing.T) {
	s := newRSys(t)
	s.cfg.NumShards = 1
	rec := s.readSide("rs", func(rs *config.ReadSide) { rs.MaxInFlight = 8 })
	var started atomic.Int64
	gate := make(chan struct{})
	var once sync.Once
	inCall := make(chan struct{})
	rec.Fail = func(ctx context.Context, _ *cospb.HandleReadSideRequest) (bool, error) {
		started.Add(1)
		once.Do(func() { close(inCall) })
		select {
		case <-gate:
			return true, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	s.start()
	s.write("a", 20) // one entity: one call at a time, the rest of what is fetched waits in its lane
	s.projector()
	s.waitConsumers("rs")
	<-inCall
	costest.Eventually(t, 10*time.Second, "the projector fetched more than it delivered", func() bool {
		return s.consumerInfo("rs", 0).NumAckPending > 1
	})
	resp, err := s.manager.PauseReadSide(context.Background(), &cospb.PauseReadSideRequest{ReadSideId: "rs"})
	ok(t, "pause", resp.GetSuccessful(), err)
	atPause := started.Load()
	close(gate)
	// Everything fetched is settled once nothing is pending acknowledgement: the call in flight
	// finished and the rest was dropped (and will come again after the resume).
	costest.Eventually(t, 10*time.Second, "no delivery pending", func() bool {
		return s.consumerInfo("rs", 0).NumAckPending == 0
	})
	if n := started.Load() - atPause; n != 0 {
		t.Fatalf("%d read-side calls started after PauseReadSide returned", n)
	}
	r, err := s.manager.ResumeReadSide(context.Background(), &cospb.ResumeReadSideRequest{ReadSideId: "rs"})
	ok(t, "resume", r.GetSuccessful(), err)
	rec.WaitFor(t, 30*time.Second, "every event after the resume", allReached([]string{"a"}, 20))
	costest.InOrder(t, "a", rec.Received("a"), 20, false)
}

// The projectors own the read-side configuration: a gateway without it serves the manager for the read
// sides the projectors run, and a gateway whose configuration differs never changes their consumers.
func TestGatewayNeedsNoReadSideConfiguration(t *testing.T) {
	s := newRSys(t)
	rec := s.readSide("rs", func(rs *config.ReadSide) { rs.MaxInFlight, rs.Timeout = 7, 3*time.Second })
	projectorCfg := s.cfg
	s.cfg.ReadSides, s.cfg.ReadSideEnabled = nil, false
	s.start() // gateway + worker without read sides
	other := projectorCfg
	other.ReadSides = []config.ReadSide{projectorCfg.ReadSides[0]}
	other.ReadSides[0].MaxInFlight, other.ReadSides[0].Timeout = 99, time.Minute
	differing := costest.StartNode(t, other, node.Roles{Gateway: true})
	s.cfg = projectorCfg
	s.projector()
	s.waitConsumers("rs")
	s.write("g", 2)
	rec.WaitFor(t, 30*time.Second, "events", allReached([]string{"g"}, 2))
	for _, m := range []cospb.ReadSideManagerServiceClient{s.manager, manager(t, differing.GRPCAddr)} {
		resp, err := m.GetLatestOffset(context.Background(), &cospb.GetLatestOffsetRequest{ReadSideId: "rs"})
		if err != nil || len(resp.GetOffsets()) != s.cfg.NumShards {
			t.Fatalf("offsets from a gateway: %v %v", resp, err)
		}
		r, err := m.PauseReadSideByShard(context.Background(), &cospb.PauseReadSideByShardRequest{ReadSideId: "rs", ClusterShardNumber: 1})
		ok(t, "pause", r.GetSuccessful(), err)
		r2, err := m.ResumeReadSideByShard(context.Background(), &cospb.ResumeReadSideByShardRequest{ReadSideId: "rs", ClusterShardNumber: 1})
		ok(t, "resume", r2.GetSuccessful(), err)
	}
	for shard := range s.cfg.NumShards {
		info := s.consumerInfo("rs", shard)
		if info.Config.MaxAckPending != 7 || info.Config.AckWait != 3*time.Second+5*time.Second {
			t.Fatalf("shard %d: max_ack_pending %d, ack_wait %v: a gateway changed the projector's settings",
				shard, info.Config.MaxAckPending, info.Config.AckWait)
		}
	}
}

func manager(t *testing.T, addr string) cospb.ReadSideManagerServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cospb.NewReadSideManagerServiceClient(conn)
}
