package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/intake"
	"github.com/cosnats/cosnats/pkg/layout"
)

// accepted is one command the intake stored (a PubAck that was not a duplicate).
type accepted struct {
	id     string
	entity string
	seq    uint64
}

// TestIntakeExactlyOnceUnderKills publishes commands to the asynchronous intake from several producers,
// each command at least twice (a producer's retries: the intake deduplicates them), while workers and
// gateways are killed with SIGKILL and restarted. Every accepted command must be applied exactly once,
// in acceptance order per entity, and have exactly one outcome.
func TestIntakeExactlyOnceUnderKills(t *testing.T) {
	tp := newTopology(t)
	startCtx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := tp.startAllAtOnce(startCtx); err != nil {
		t.Fatalf("start: %v", err)
	}
	nc, err := tp.nats.connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	lay := layout.Default()

	// Every outcome published, as a subscriber sees it (the outcome stream would hide a second
	// publish of the same outcome; a subscriber would not).
	var omu sync.Mutex
	outcomes := map[string][]*natspb.CommandOutcome{}
	sub, err := nc.Subscribe(lay.OutcomeSubjects(), func(m *nats.Msg) {
		var o natspb.CommandOutcome
		if err := proto.Unmarshal(m.Data, &o); err != nil {
			t.Errorf("undecodable outcome on %s: %v", m.Subject, err)
			return
		}
		omu.Lock()
		outcomes[o.GetCommandId()] = append(outcomes[o.GetCommandId()], &o)
		omu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const producers, entities = 4, 12
	produce, stopProducing := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopProducing()
	var (
		amu   sync.Mutex
		acc   []accepted
		dups  int
		wg    sync.WaitGroup
		perrs []string
	)
	publish := func(m *nats.Msg) (*jetstream.PubAck, error) {
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ack, err := js.PublishMsg(ctx, m)
			cancel()
			if err == nil || attempt == 20 {
				return ack, err
			}
		}
	}
	for p := range producers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 7))
			for i := 0; produce.Err() == nil; i++ {
				entity := fmt.Sprintf("acct-%d", rng.IntN(entities))
				id := fmt.Sprintf("p%d-%d", p, i)
				m := nats.NewMsg(lay.IntakeSubject())
				m.Header.Set(intake.HeaderEntityID, entity)
				m.Header.Set(intake.HeaderCommandType, "google.protobuf.StringValue")
				m.Header.Set("Nats-Msg-Id", id)
				m.Data, _ = proto.Marshal(wrapperspb.String("add:1"))
				ack, err := publish(m)
				if err != nil {
					amu.Lock()
					perrs = append(perrs, fmt.Sprintf("%s: %v", id, err))
					amu.Unlock()
					return
				}
				again, err := publish(m) // the producer retries: it must not count twice
				amu.Lock()
				if !ack.Duplicate {
					acc = append(acc, accepted{id: id, entity: entity, seq: ack.Sequence})
				}
				if err == nil && again.Duplicate && again.Sequence == ack.Sequence {
					dups++
				} else {
					perrs = append(perrs, fmt.Sprintf("%s: the retry was not recognised as a duplicate: %+v %v", id, again, err))
				}
				amu.Unlock()
				time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond) // a producer's pace, not synchronisation
			}
		})
	}

	// Faults while the producers run: a worker every 3 s, a gateway every 8 s, each back after 1 s.
	rng := rand.New(rand.NewPCG(1, 2))
	kills := map[string]int{}
	tick := time.NewTicker(time.Second)
	for n := 1; produce.Err() == nil; n++ {
		<-tick.C
		var victim *proc
		switch {
		case n%8 == 0:
			// In turn, so the gateway holding the intake is among the victims whichever it is.
			victim = tp.gateways[(n/8)%len(tp.gateways)]
		case n%3 == 0:
			victim = tp.workers[rng.IntN(len(tp.workers))]
		default:
			continue
		}
		victim.kill()
		kills[victim.name]++
		hold(produce, time.Second)
		if err := victim.start(); err != nil {
			t.Fatalf("restart %s: %v", victim.name, err)
		}
	}
	tick.Stop()
	wg.Wait()
	if len(perrs) > 0 {
		t.Fatalf("producers: %d errors, first: %s", len(perrs), perrs[0])
	}
	t.Logf("%d commands accepted (each published twice: %d retries recognised as duplicates); kills: %v", len(acc), dups, kills)

	waitCtx, cancelWait := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancelWait()
	if err := waitReady(waitCtx, tp.ours()); err != nil {
		t.Fatalf("after the faults: %v", err)
	}
	var why string
	costest.Eventually(t, 3*time.Minute, "an outcome for every accepted command", func() bool {
		omu.Lock()
		defer omu.Unlock()
		missing := 0
		for _, a := range acc {
			if len(outcomes[a.id]) == 0 {
				missing++
			}
		}
		why = strconv.Itoa(missing) + " without an outcome"
		return missing == 0
	}, &why)

	// Exactly once, in acceptance order per entity.
	want := map[string][]string{}
	sort.Slice(acc, func(i, j int) bool { return acc[i].seq < acc[j].seq })
	for _, a := range acc {
		want[a.entity] = append(want[a.entity], a.id)
	}
	for entity, ids := range want {
		got := costest.CommandIDs(t, js, entity, numShards)
		if strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Errorf("%s: applied %d commands %v,\naccepted %d in order %v", entity, len(got), head(got), len(ids), head(ids))
		}
	}
	// Exactly one outcome each, and it says applied.
	omu.Lock()
	defer omu.Unlock()
	replayed := 0
	for _, a := range acc {
		got := outcomes[a.id]
		if len(got) != 1 {
			t.Errorf("%s: %d outcomes", a.id, len(got))
			continue
		}
		if got[0].GetResponse() == nil || got[0].GetIntakeSequence() != a.seq {
			t.Errorf("%s: outcome %v (intake sequence %d)", a.id, got[0], a.seq)
		}
		if got[0].GetReplayed() {
			replayed++
		}
	}
	if n := len(outcomes); n != len(acc) {
		t.Errorf("%d commands have outcomes, %d were accepted", n, len(acc))
	}
	t.Logf("every accepted command applied once, in order, one outcome each (%d answered from the log after a retry)", replayed)
	holds := 0
	for _, g := range tp.gateways {
		holds += g.grepLog("this gateway holds the intake")
	}
	if holds < 2 {
		t.Errorf("the intake was taken %d times: killing its holder should have moved it", holds)
	}
	if exits := tp.unaskedExits(); len(exits) > 0 {
		t.Errorf("processes exited unasked: %v", exits)
	}
}

func head(s []string) []string {
	if len(s) > 12 {
		return append(s[:12:12], "…")
	}
	return s
}
