package fault

import (
	"context"
	"fmt"
	"maps"
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
	testIntakeUnderFaults(t, false, func(tp *topology, n int, rng *rand.Rand) func() error {
		var victim *proc
		switch {
		case n%8 == 0:
			// In turn, so the gateway holding the intake is among the victims whichever it is.
			victim = tp.gateways[(n/8)%len(tp.gateways)]
		case n%3 == 0:
			victim = tp.workers[rng.IntN(len(tp.workers))]
		default:
			return nil
		}
		victim.kill()
		return victim.start
	})
}

// TestIntakeExactlyOnceUnderNATSFaults is the same with the faults in NATS: a node killed with SIGKILL
// (the intake's, outcomes' or events' stream leader among them, whichever it is), and every client
// connection dropped, producers' included. A producer whose publish was stored but not acknowledged
// retries and is told "duplicate", which is how it learns its command was accepted. Outcomes are
// counted in the outcome stream: a subscriber's own connection is dropped too, and the republished
// copy is not redelivered.
func TestIntakeExactlyOnceUnderNATSFaults(t *testing.T) {
	testIntakeUnderFaults(t, true, func(tp *topology, n int, rng *rand.Rand) func() error {
		switch n % 6 {
		case 0:
			node := tp.nats.nodes[rng.IntN(clusterSize)]
			node.kill()
			return node.start
		case 3:
			tp.nats.dropClientConnections()
		}
		return nil
	})
}

// testIntakeUnderFaults runs producers against the intake for 30 s while fault runs every second (n
// counts the seconds); what fault returns, if anything, undoes it a second later. natsFaults says the
// test's own connection is among the victims.
func testIntakeUnderFaults(t *testing.T, natsFaults bool, fault func(tp *topology, n int, rng *rand.Rand) func() error) {
	tp := newTopology(t)
	startCtx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := tp.startAllAtOnce(startCtx); err != nil {
		t.Fatalf("start: %v", err)
	}
	nc, js := tp.nats.jetStream(t)
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
		amu  sync.Mutex
		acc  []accepted
		dups int
		// retries accepted again (only with NATS faults)
		reaccepted int
		wg         sync.WaitGroup
		perrs      []string
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
				// A first answer of "duplicate" is an earlier attempt of publish that was stored but
				// whose acknowledgement was lost: accepted all the same, at the sequence it names.
				acc = append(acc, accepted{id: id, entity: entity, seq: ack.Sequence})
				switch {
				case err == nil && again.Duplicate && again.Sequence == ack.Sequence:
					dups++
				case natsFaults && err == nil && !again.Duplicate:
					// A node that restarted rebuilt its duplicate window from the messages it still
					// stores, and the intake removes decided commands: as stream leader it accepts the
					// retry again. The command must still be applied once (docs/nats-producers.md).
					reaccepted++
				default:
					perrs = append(perrs, fmt.Sprintf("%s: the retry was not recognised as a duplicate: %+v %v", id, again, err))
				}
				amu.Unlock()
				time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond) // a producer's pace, not synchronisation
			}
		})
	}

	// Faults while the producers run, each undone after a second.
	rng := rand.New(rand.NewPCG(1, 2))
	faults := 0
	tick := time.NewTicker(time.Second)
	for n := 1; produce.Err() == nil; n++ {
		<-tick.C
		undo := fault(tp, n, rng)
		faults++
		if undo == nil {
			continue
		}
		hold(produce, time.Second)
		if err := undo(); err != nil {
			t.Fatalf("undo fault %d: %v", n, err)
		}
	}
	tick.Stop()
	wg.Wait()
	if len(perrs) > 0 {
		t.Fatalf("producers: %d errors, first: %s", len(perrs), perrs[0])
	}
	t.Logf("%d commands accepted (each published twice: %d retries recognised as duplicates)", len(acc), dups)
	if natsFaults {
		for _, n := range tp.nats.nodes {
			t.Logf("%s: started %d times", n.name, n.startCount())
		}
	} else {
		for _, p := range tp.ours() {
			t.Logf("%s: started %d times", p.name, p.startCount())
		}
	}

	waitCtx, cancelWait := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancelWait()
	if err := waitReady(waitCtx, tp.ours()); err != nil {
		t.Fatalf("after the faults: %v", err)
	}
	// Where the outcomes are counted: as a subscriber heard them, or as the outcome stream stores them
	// when the subscriber's own connection was dropped.
	heard := func() map[string][]*natspb.CommandOutcome {
		omu.Lock()
		defer omu.Unlock()
		return maps.Clone(outcomes)
	}
	counted := heard
	if natsFaults {
		counted = func() map[string][]*natspb.CommandOutcome {
			stored, err := readOutcomes(waitCtx, js, lay)
			if err != nil {
				t.Logf("read the outcome stream: %v", err)
				return nil
			}
			return stored
		}
	}
	var why string
	var got map[string][]*natspb.CommandOutcome
	costest.Eventually(t, 3*time.Minute, "an outcome for every accepted command", func() bool {
		got = counted()
		missing := 0
		for _, a := range acc {
			if len(got[a.id]) == 0 {
				missing++
			}
		}
		why = strconv.Itoa(missing) + " without an outcome"
		return missing == 0
	}, &why)

	// One outcome per accepted message. Without NATS faults that is one per command, at the sequence
	// its producer was told. With them, a command may have been accepted more than once (above, or an
	// attempt stored whose acknowledgement was lost and then accepted again): one outcome per intake
	// sequence, the producer's among them.
	first := map[string]uint64{} // per command, its first intake sequence: where it was decided
	replayed, extra := 0, 0
	for _, a := range acc {
		outs := got[a.id]
		seqs := map[uint64]bool{}
		mine := false
		for _, o := range outs {
			if seqs[o.GetIntakeSequence()] {
				t.Errorf("%s: two outcomes for intake sequence %d", a.id, o.GetIntakeSequence())
			}
			seqs[o.GetIntakeSequence()] = true
			mine = mine || o.GetIntakeSequence() == a.seq
			if o.GetResponse() == nil {
				t.Errorf("%s: outcome %v", a.id, o)
			}
			if f, ok := first[a.id]; !ok || o.GetIntakeSequence() < f {
				first[a.id] = o.GetIntakeSequence()
			}
		}
		if !mine || (!natsFaults && len(outs) != 1) {
			t.Errorf("%s: %d outcomes %v, accepted at intake sequence %d", a.id, len(outs), outs, a.seq)
			continue
		}
		extra += len(outs) - 1
		if outs[0].GetReplayed() {
			replayed++
		}
	}
	if n := len(got); n != len(acc) {
		t.Errorf("%d commands have outcomes, %d were accepted", n, len(acc))
	}
	// Exactly once, in acceptance order per entity: the order of the sequences they were decided at.
	want := map[string][]string{}
	sort.Slice(acc, func(i, j int) bool { return first[acc[i].id] < first[acc[j].id] })
	for _, a := range acc {
		want[a.entity] = append(want[a.entity], a.id)
	}
	for entity, ids := range want {
		got := costest.CommandIDs(t, js, entity, numShards)
		if strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Errorf("%s: applied %d commands %v,\naccepted %d in order %v", entity, len(got), head(got), len(ids), head(ids))
		}
	}
	// A subscriber whose connection was dropped may miss outcomes, but never hears one twice.
	missed := 0
	for id, outs := range heard() {
		seqs := map[uint64]bool{}
		for _, o := range outs {
			if seqs[o.GetIntakeSequence()] {
				t.Errorf("%s: a subscriber heard the outcome of intake sequence %d twice", id, o.GetIntakeSequence())
			}
			seqs[o.GetIntakeSequence()] = true
		}
	}
	for _, a := range acc {
		if len(heard()[a.id]) == 0 {
			missed++
		}
	}
	t.Logf("accepted again after a node restart: %d retries; %d outcomes beyond the first of their command", reaccepted, extra)
	t.Logf("every accepted command applied once, in order, one outcome per accepted message (%d answered from the log after a retry; the subscriber missed %d)", replayed, missed)
	if !natsFaults {
		holds := 0
		for _, g := range tp.gateways {
			holds += g.grepLog("this gateway holds the intake")
		}
		if holds < 2 {
			t.Errorf("the intake was taken %d times: killing its holder should have moved it", holds)
		}
	}
	if exits := tp.unaskedExits(); len(exits) > 0 {
		t.Errorf("processes exited unasked: %v", exits)
	}
}

// readOutcomes reads the whole outcome stream, by command id.
func readOutcomes(ctx context.Context, js jetstream.JetStream, lay layout.Layout) (map[string][]*natspb.CommandOutcome, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, lay.OutcomeStream())
	if err != nil {
		return nil, fmt.Errorf("outcome stream: %w", err)
	}
	out := map[string][]*natspb.CommandOutcome{}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{lay.OutcomeLogSubjects()}})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	for {
		batch, err := c.FetchNoWait(500)
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		n := 0
		var pending uint64
		for m := range batch.Messages() {
			n++
			var o natspb.CommandOutcome
			if err := proto.Unmarshal(m.Data(), &o); err != nil {
				return nil, fmt.Errorf("undecodable outcome on %s: %w", m.Subject(), err)
			}
			out[o.GetCommandId()] = append(out[o.GetCommandId()], &o)
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			pending = md.NumPending
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if n == 0 || pending == 0 {
			return out, nil
		}
	}
}

func head(s []string) []string {
	if len(s) > 12 {
		return append(s[:12:12], "…")
	}
	return s
}
