package fault

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/layout"
)

// follower is a client of SubscribeAll that resumes where it stopped, the way the README tells
// clients to: whenever its stream ends, it subscribes again (through the next gateway) from the last
// sequence it received + 1.
type follower struct {
	gateways []cospb.ChiefOfStateServiceClient

	mu      sync.Mutex
	revs    map[string][]uint32 // per entity, the revisions received, in order
	last    uint64              // the stream sequence of the last event received
	resumes int
	ends    map[string]int // why streams ended, by gRPC status text
	bad     []string       // events out of stream order
}

func (f *follower) run(ctx context.Context) {
	next := uint64(1)
	for n := 0; ctx.Err() == nil; n++ {
		gw := f.gateways[n%len(f.gateways)]
		stream, err := gw.SubscribeAll(ctx, &cospb.SubscribeAllRequest{SubscriptionId: "follower-" + strconv.Itoa(n), FromSequence: next})
		for err == nil {
			var resp *cospb.SubscribeAllResponse
			resp, err = stream.Recv()
			if err != nil {
				break
			}
			f.mu.Lock()
			if resp.GetSequence() < next {
				f.bad = append(f.bad, fmt.Sprintf("stream %d: sequence %d, expected at least %d", n, resp.GetSequence(), next))
			}
			id := resp.GetMeta().GetEntityId()
			f.revs[id] = append(f.revs[id], resp.GetMeta().GetRevisionNumber())
			f.last = resp.GetSequence()
			f.mu.Unlock()
			next = resp.GetSequence() + 1
		}
		if ctx.Err() != nil {
			return
		}
		f.mu.Lock()
		f.resumes++
		st := status.Convert(err)
		f.ends[st.Code().String()+": "+oneLine(st.Message(), 60)]++
		f.mu.Unlock()
		hold(ctx, 200*time.Millisecond) // a client's pause before it subscribes again
	}
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// TestSubscriptionsResumeUnderFaults follows every event with SubscribeAll while clients send
// commands and NATS nodes and gateways are killed with SIGKILL and every client connection is dropped.
// Each time its stream ends, the follower resumes from its last sequence + 1. In the end it must have
// received exactly the log's events: per entity every revision once, in order, none missing.
func TestSubscriptionsResumeUnderFaults(t *testing.T) {
	tp := newTopology(t)
	startCtx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := tp.startAllAtOnce(startCtx); err != nil {
		t.Fatalf("start: %v", err)
	}
	clients := tp.clients()
	f := &follower{gateways: clients, revs: map[string][]uint32{}, ends: map[string]int{}}
	follow, stopFollowing := context.WithCancel(context.Background())
	var fwg sync.WaitGroup
	fwg.Go(func() { f.run(follow) })
	defer func() { stopFollowing(); fwg.Wait() }()

	l := newLoad(clients, 12)
	l.run(8)
	faulting, stopFaults := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopFaults()
	tick := time.NewTicker(2 * time.Second)
	for n := 0; faulting.Err() == nil; n++ {
		<-tick.C
		var victim *proc
		switch n % 3 {
		case 0:
			victim = tp.nats.nodes[(n/3)%clusterSize]
		case 1:
			tp.nats.dropClientConnections()
			continue
		case 2:
			victim = tp.gateways[(n/3)%len(tp.gateways)]
		}
		victim.kill()
		hold(faulting, time.Second)
		if err := victim.start(); err != nil {
			t.Fatalf("restart %s: %v", victim.name, err)
		}
	}
	tick.Stop()
	l.stop()
	waitCtx, cancelWait := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancelWait()
	if err := waitReady(waitCtx, tp.ours()); err != nil {
		t.Fatalf("after the faults: %v", err)
	}

	_, js := tp.nats.jetStream(t)
	events, err := js.Stream(waitCtx, layout.Default().EventStream())
	if err != nil {
		t.Fatal(err)
	}
	logs, err := readLogs(waitCtx, events, l.entities)
	if err != nil {
		t.Fatalf("read the log: %v", err)
	}
	want := map[string][]uint32{}
	total := 0
	for id, evs := range logs {
		for _, e := range evs {
			want[id] = append(want[id], e.rev)
		}
		total += len(evs)
	}
	var why string
	costest.Eventually(t, 2*time.Minute, "the follower to receive every event of the log", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		got := 0
		for _, revs := range f.revs {
			got += len(revs)
		}
		why = fmt.Sprintf("%d of %d events", got, total)
		return got >= total
	}, &why)
	stopFollowing()
	fwg.Wait()

	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.bad {
		t.Error(b)
	}
	for _, id := range l.entities {
		got, w := f.revs[id], want[id]
		i := 0
		for i < len(got) && i < len(w) && got[i] == w[i] {
			i++
		}
		if i < len(got) || i < len(w) {
			t.Errorf("%s: received %d events, the log holds %d; they differ from index %d: received %v, the log %v",
				id, len(got), len(w), i, got[i:min(i+8, len(got))], w[i:min(i+8, len(w))])
		}
	}
	if f.resumes == 0 {
		t.Error("no stream ended: the faults did not reach the follower")
	}
	t.Logf("%d events followed across %d resumed streams; streams ended with %v", total, f.resumes, f.ends)
	if exits := tp.unaskedExits(); len(exits) > 0 {
		t.Errorf("processes exited unasked: %v", exits)
	}
}
