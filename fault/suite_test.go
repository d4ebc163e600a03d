package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/layout"
)

// scenario is one fault: run injects it, lets it last, and restores what it broke.
type scenario struct {
	name string
	run  func(ctx context.Context, s *suite) error
	// noUnknown: the fault must not leave any caller with an UNKNOWN outcome (graceful shutdowns).
	noUnknown bool
}

// window is what happened during one scenario.
type window struct {
	name       string
	from, to   time.Time
	recovered  time.Duration // from the injection until every process was ready and commands flowed
	answers    map[codes.Code]int64
	exits      []string
	noUnknown  bool
	recoverErr error
}

type suite struct {
	t    *testing.T
	tp   *topology
	load *load
	nc   *nats.Conn
	rng  *rand.Rand
}

func TestFaultSuite(t *testing.T) {
	tp := newTopology(t)
	ctx := context.Background()
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	began := time.Now()
	up, err := tp.startAllAtOnce(startCtx)
	cancel()
	if err != nil {
		t.Fatalf("all processes started at once before NATS, on an empty cluster: %v", err)
	}
	t.Logf("every process started at once, NATS 2s later, on an empty cluster: all ready after %v", up.Round(time.Millisecond))
	nc, err := tp.nats.connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s := &suite{t: t, tp: tp, nc: nc, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))}
	s.load = newLoad(tp.clients(), 24)
	s.load.run(8)
	if err := s.flowing(ctx, 50, time.Minute); err != nil {
		t.Fatalf("no commands flow after start-up: %v", err)
	}
	windows := []window{{name: "start-up: all at once, NATS 2s later", from: began, to: time.Now(), recovered: up, answers: s.load.answers()}}

	all := scenarios()
	if only := os.Getenv("COS_FAULT_ONLY"); only != "" { // e.g. "rolling,partition": the scenarios whose name has one
		var some []scenario
		for _, sc := range all {
			for _, part := range strings.Split(only, ",") {
				if part != "" && strings.Contains(sc.name, part) {
					some = append(some, sc)
					break
				}
			}
		}
		all = some
	}
	runOne := func(sc scenario) {
		if sc.noUnknown {
			// Whatever the faults before left unanswered is answered first (and not blamed on this one).
			if err := s.load.settle(ctx, 2*time.Minute); err != nil {
				t.Errorf("before %s: %v", sc.name, err)
			}
		}
		w := window{name: sc.name, from: time.Now(), answers: s.load.answers(), noUnknown: sc.noUnknown}
		exitsBefore := len(tp.unaskedExits())
		if err := sc.run(ctx, s); err != nil {
			t.Errorf("%s: %v", sc.name, err)
		}
		w.recoverErr = s.recover(ctx)
		w.recovered = time.Since(w.from)
		w.to = time.Now()
		after := s.load.answers()
		for c, n := range after {
			w.answers[c] = n - w.answers[c]
		}
		w.exits = tp.unaskedExits()[exitsBefore:]
		windows = append(windows, w)
		t.Logf("%-34s recovered after %v; answers other than OK: %v", sc.name, w.recovered.Round(time.Millisecond), w.answers)
		if u := s.load.unknownsIn(w.from, w.to); len(u) > 0 {
			t.Logf("  UNKNOWN answers:\n%s", joinLines(u, 5))
		}
	}
	for _, sc := range all {
		runOne(sc)
	}
	if d, err := time.ParseDuration(os.Getenv("COS_FAULT_SOAK")); err == nil && d > 0 {
		t.Logf("soak: repeating the faults in random order for %v", d)
		for end := time.Now().Add(d); time.Now().Before(end); {
			runOne(all[s.rng.IntN(len(all))])
		}
	}
	s.load.stop()
	s.finalChecks(ctx, windows)
}

// flowing waits until n more commands are acknowledged.
func (s *suite) flowing(ctx context.Context, n int, within time.Duration) error {
	base := s.load.acked()
	deadline := time.Now().Add(within)
	for s.load.acked() < base+n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d commands acknowledged in %v, want %d", s.load.acked()-base, within, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// recover waits until every node is healthy, every process ready, and commands are acknowledged again.
func (s *suite) recover(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := s.tp.nats.healthy(rctx); err != nil {
		return err
	}
	if err := waitReady(rctx, s.tp.ours()); err != nil {
		return err
	}
	return s.flowing(rctx, 20, time.Minute)
}

// hold lets a fault last.
func hold(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func restart(p *proc) error {
	p.kill()
	return p.start()
}

func scenarios() []scenario {
	kill9 := func(name string, pick func(*topology) []*proc) scenario {
		return scenario{name: "kill -9 " + name, run: func(ctx context.Context, s *suite) error {
			ps := pick(s.tp)
			p := ps[s.rng.IntN(len(ps))]
			p.kill()
			hold(ctx, 2*time.Second)
			return p.start()
		}}
	}
	return []scenario{
		kill9("a worker", func(tp *topology) []*proc { return tp.workers }),
		kill9("a gateway", func(tp *topology) []*proc { return tp.gateways }),
		kill9("a projector", func(tp *topology) []*proc { return tp.projectors }),
		{name: "kill -9 a NATS node, restart it", run: func(ctx context.Context, s *suite) error {
			n := s.tp.nats.nodes[s.rng.IntN(clusterSize)]
			n.kill()
			hold(ctx, 5*time.Second)
			return n.start()
		}},
		{name: "drop every client connection x3", run: func(ctx context.Context, s *suite) error {
			for range 3 {
				s.tp.nats.dropClientConnections()
				hold(ctx, time.Second)
			}
			return nil
		}},
		{name: "partition a NATS node for 12s", run: func(ctx context.Context, s *suite) error {
			k := s.rng.IntN(clusterSize)
			s.tp.nats.partition(k)
			hold(ctx, 12*time.Second)
			s.tp.nats.heal(k)
			return nil
		}},
		{name: "cut the stream leader off from its peers for 12s", run: func(ctx context.Context, s *suite) error {
			// The stream's leader is moved to the meta leader's node, and a probe gateway connects to that
			// node only. Cut off from its peers, the node still believes it leads (and still answers the
			// API) for seconds after the others elected a new leader: the probe writes through the other
			// gateways and reads through its own all along.
			k, err := s.moveStreamLeaderToMetaLeader(ctx)
			if err != nil {
				return err
			}
			p, addr := s.tp.extraGateway("gateway-probe", s.tp.nats.clients[k].URL())
			if err := p.start(); err != nil {
				return err
			}
			defer p.kill()
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			err = waitReady(rctx, []*proc{p})
			cancel()
			if err != nil {
				return err
			}
			return s.readAfterWriteProbe(ctx, costest.Client(s.t, addr), 12*time.Second,
				func() { s.tp.nats.isolate(k) }, func() { s.tp.nats.rejoin(k) })
		}},
		{name: "stream and consumer leader step-downs", run: func(ctx context.Context, s *suite) error {
			return s.stepDowns(ctx)
		}},
		{name: "slow read side (300 ms calls) for 8s", run: func(ctx context.Context, s *suite) error {
			s.tp.readSide.SetFail(func(ctx context.Context, _ *cospb.HandleReadSideRequest) (bool, error) {
				select {
				case <-time.After(300 * time.Millisecond):
					return true, nil
				case <-ctx.Done():
					return false, ctx.Err()
				}
			})
			hold(ctx, 8*time.Second)
			s.tp.readSide.SetFail(nil)
			return nil
		}},
		{name: "failing read side (30%) for 8s", run: func(ctx context.Context, s *suite) error {
			s.tp.readSide.SetFail(func(context.Context, *cospb.HandleReadSideRequest) (bool, error) {
				return rand.IntN(10) >= 3, nil
			})
			hold(ctx, 8*time.Second)
			s.tp.readSide.SetFail(nil)
			return nil
		}},
		{name: "the write handler dies for 3s", run: func(ctx context.Context, s *suite) error {
			s.tp.handlerSrv.stop()
			hold(ctx, 3*time.Second)
			return s.tp.handlerSrv.start()
		}},
		{name: "rolling restart (SIGTERM) of every process", noUnknown: true, run: func(ctx context.Context, s *suite) error {
			for _, p := range s.tp.ours() {
				s.t.Logf("  SIGTERM %s at %s", p.name, time.Now().Format("15:04:05.000"))
				if !p.term(20 * time.Second) {
					return fmt.Errorf("%s did not exit within 20s of SIGTERM", p.name)
				}
				if err := p.start(); err != nil {
					return err
				}
				rctx, cancel := context.WithTimeout(ctx, time.Minute)
				err := waitReady(rctx, s.tp.ours())
				if err == nil {
					err = s.flowing(rctx, 100, time.Minute) // under load before the next one goes
				}
				cancel()
				if err != nil {
					return fmt.Errorf("after restarting %s: %w", p.name, err)
				}
			}
			return nil
		}},
	}
}

// stepDowns asks the event stream's leader and every read-side consumer's leader to step down.
// moveStreamLeaderToMetaLeader makes the JetStream meta leader's node lead the event stream too, and
// returns it.
func (s *suite) moveStreamLeaderToMetaLeader(ctx context.Context) (int, error) {
	subject := "$JS.API.STREAM.LEADER.STEPDOWN." + layout.Default().EventStream()
	for deadline := time.Now().Add(30 * time.Second); ; {
		meta, merr := s.tp.nats.metaLeader()
		leader, err := s.streamLeader(ctx)
		if merr == nil && err == nil && leader == meta {
			return meta, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("could not move the stream leader to the meta leader (stream leader %d, %v; meta leader %d, %v)", leader, err, meta, merr)
		}
		if merr == nil && err == nil {
			body := fmt.Sprintf(`{"placement":{"preferred":"n%d"}}`, meta)
			if _, err := s.nc.Request(subject, []byte(body), 10*time.Second); err != nil {
				return 0, fmt.Errorf("%s: %w", subject, err)
			}
		}
		hold(ctx, 500*time.Millisecond)
	}
}

// readAfterWriteProbe creates an entity, calls cut, and for d writes through the suite's gateways (in
// turn) and reads through reader after each write; then it calls heal. It fails if a read answers a
// revision older than a write acknowledged before it began.
func (s *suite) readAfterWriteProbe(ctx context.Context, reader cospb.ChiefOfStateServiceClient, d time.Duration, cut, heal func()) error {
	writers := s.tp.clients()
	entity := fmt.Sprintf("probe-%d", time.Now().UnixNano())
	var acked uint32
	for deadline := time.Now().Add(30 * time.Second); acked == 0; {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := writers[0].ProcessCommand(wctx, &cospb.ProcessCommandRequest{EntityId: entity, Command: costest.Cmd("add:1")})
		cancel()
		if err == nil {
			acked = resp.GetMeta().GetRevisionNumber()
		} else if time.Now().After(deadline) {
			return fmt.Errorf("probe: could not create the entity: %w", err)
		}
	}
	cut()
	defer heal()
	var writes, reads, failedReads int
	var stale []string
	var readErr error
	for i, end := 0, time.Now().Add(d); time.Now().Before(end) && ctx.Err() == nil; i++ {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := writers[i%len(writers)].ProcessCommand(wctx, &cospb.ProcessCommandRequest{EntityId: entity, Command: costest.Cmd("add:1")})
		cancel()
		if err == nil {
			acked, writes = resp.GetMeta().GetRevisionNumber(), writes+1
		}
		rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		got, err := reader.GetState(rctx, &cospb.GetStateRequest{EntityId: entity})
		cancel()
		if status.Code(err) == codes.NotFound {
			got, err = &cospb.GetStateResponse{}, nil // revision 0
		}
		switch {
		case err != nil:
			failedReads++
			readErr = err
		case got.GetMeta().GetRevisionNumber() < acked:
			stale = append(stale, fmt.Sprintf("%s read revision %d after revision %d was acknowledged",
				time.Now().Format("15:04:05.000"), got.GetMeta().GetRevisionNumber(), acked))
		default:
			reads++
		}
		hold(ctx, 50*time.Millisecond)
	}
	s.t.Logf("  probe: %d writes acknowledged; reads through the cut-off node: %d current, %d failed (the last: %v), %d stale",
		writes, reads, failedReads, readErr, len(stale))
	if len(stale) > 0 {
		return fmt.Errorf("%d reads through the gateway on the cut-off node answered an older state:\n%s", len(stale), joinLines(stale, 10))
	}
	return nil
}

// streamLeader is the index of the node leading the event stream.
func (s *suite) streamLeader(ctx context.Context) (int, error) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(rctx, layout.Default().EventStream())
	if err != nil {
		return 0, fmt.Errorf("event stream info: %w", err)
	}
	if cl := st.CachedInfo().Cluster; cl != nil {
		for i := range clusterSize {
			if cl.Leader == fmt.Sprintf("n%d", i) {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("the event stream has no leader: %+v", st.CachedInfo().Cluster)
}

func (s *suite) stepDowns(ctx context.Context) error {
	lay := layout.Default()
	subjects := []string{"$JS.API.STREAM.LEADER.STEPDOWN." + lay.EventStream()}
	for shard := range numShards {
		subjects = append(subjects, fmt.Sprintf("$JS.API.CONSUMER.LEADER.STEPDOWN.%s.%s", lay.EventStream(), lay.ReadSideConsumer("rs", shard)))
	}
	for _, subj := range subjects {
		if _, err := s.nc.Request(subj, nil, 10*time.Second); err != nil {
			return fmt.Errorf("%s: %w", subj, err)
		}
		hold(ctx, 500*time.Millisecond)
	}
	return nil
}

// finalChecks checks the guarantees over the whole run and prints each scenario's figures.
func (s *suite) finalChecks(ctx context.Context, windows []window) {
	t, tp := s.t, s.tp
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	if err := tp.nats.healthy(rctx); err != nil {
		t.Errorf("at the end: %v", err)
	}
	if err := waitReady(rctx, tp.ours()); err != nil {
		t.Errorf("at the end, not every process is ready: %v", err)
	}
	cancel()
	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, layout.Default().EventStream())
	if err != nil {
		t.Fatal(err)
	}
	ops := s.load.snapshot()
	logs, err := readLogs(ctx, stream, s.load.entities)
	if err != nil {
		t.Fatalf("read the event log back: %v", err)
	}
	v := check(logs, s.load.entities, ops, s.load.start)
	// The read side must end up with every revision.
	want := map[string]uint32{}
	for id, log := range logs {
		want[id] = uint32(len(log))
	}
	deadline := time.Now().Add(3 * time.Minute)
	for !allDelivered(tp.readSide, want) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	rsProblems := readSideProblems(tp.readSide, want)

	var b strings.Builder
	fmt.Fprintf(&b, "\n%-40s %8s %8s %6s %6s %6s %5s %5s %9s %8s\n", "scenario", "acked", "retried", "lost", "dup", "reord", "unkn", "exits", "recovery", "")
	var totalAcked, totalRetried int
	for _, w := range windows {
		var acked, retried, lost, dup int
		for _, o := range ops {
			if o.id == "" || o.call.Before(w.from) || !o.call.Before(w.to) {
				continue
			}
			if o.ok {
				acked++
			}
			if o.attempts > 1 {
				retried++
			}
			if v.lost[o.id] {
				lost++
			}
			if v.duplicated[o.id] {
				dup++
			}
		}
		reord := reordered(ops, w.from, w.to)
		stale := staleReads(ops, w.from, w.to)
		if len(stale) > 0 {
			t.Errorf("%s: %d reads answered a state older than an acknowledged command:\n%s", w.name, len(stale), joinLines(stale, 10))
		}
		totalAcked += acked
		totalRetried += retried
		note := ""
		if w.recoverErr != nil {
			note = "NOT RECOVERED"
			t.Errorf("%s: did not recover: %v", w.name, w.recoverErr)
		}
		if len(w.exits) > 0 {
			t.Errorf("%s: processes exited by themselves: %v", w.name, w.exits)
		}
		if w.noUnknown && w.answers[codes.Unknown] > 0 {
			t.Errorf("%s: %d commands were answered UNKNOWN during a graceful restart:\n%s", w.name, w.answers[codes.Unknown],
				joinLines(s.load.unknownsIn(w.from, w.to), 10))
		}
		if reord > 0 {
			t.Errorf("%s: %d acknowledged commands were applied in another order than their clients saw", w.name, reord)
		}
		fmt.Fprintf(&b, "%-40s %8d %8d %6d %6d %6d %5d %5d %9s %8s\n", w.name, acked, retried, lost, dup, reord, w.answers[codes.Unknown],
			len(w.exits), w.recovered.Round(100*time.Millisecond), note)
	}
	codesSeen := s.load.answers()
	keys := make([]string, 0, len(codesSeen))
	for c, n := range codesSeen {
		keys = append(keys, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(keys)
	totalAcked, totalRetried = 0, 0
	for _, o := range ops {
		if o.id != "" && o.ok {
			totalAcked++
		}
		if o.id != "" && o.attempts > 1 {
			totalRetried++
		}
	}
	fmt.Fprintf(&b, "whole run: %d commands acknowledged (%d retried at least once), %d given up by their client, %d events in the log, "+
		"%d entities out of order, %d read-side deliveries; answers other than OK: %s\n",
		totalAcked, totalRetried, v.unresolved, v.applied, len(v.reordered), tp.readSide.Total(), strings.Join(keys, " "))
	t.Log(b.String())
	if exits := tp.unaskedExits(); len(exits) > 0 {
		t.Errorf("processes exited by themselves:\n%s", strings.Join(exits, "\n"))
	}
	if len(v.problems) > 0 {
		t.Errorf("the guarantees do not hold:\n%s", joinLines(v.problems, 40))
	}
	if len(rsProblems) > 0 {
		t.Errorf("the read side:\n%s", joinLines(rsProblems, 40))
	}
}

// staleReads describes the reads started in [from, to) that answered a lower revision than a command
// of the same entity acknowledged before the read was sent (GetState promises read-your-writes).
func staleReads(ops []*op, from, to time.Time) []string {
	acked := map[string][]*op{}
	for _, o := range ops {
		if o.id != "" && o.ok {
			acked[o.entity] = append(acked[o.entity], o)
		}
	}
	for _, es := range acked {
		sort.Slice(es, func(i, j int) bool { return es[i].ret.Before(es[j].ret) })
	}
	var out []string
	for _, r := range ops {
		if r.id != "" || !r.ok || r.call.Before(from) || !r.call.Before(to) {
			continue
		}
		var newest *op
		for _, w := range acked[r.entity] {
			if !w.ret.Before(r.call) {
				break
			}
			if newest == nil || w.rev > newest.rev {
				newest = w
			}
		}
		if newest != nil && newest.rev > r.rev {
			out = append(out, fmt.Sprintf("%s: GetState at %s through gateway %d answered revision %d; revision %d was acknowledged at %s",
				r.entity, r.call.Format("15:04:05.000"), r.gw, r.rev, newest.rev, newest.ret.Format("15:04:05.000")))
		}
	}
	return out
}

// reordered counts the acknowledged commands that started in [from, to) and were applied before a
// command of the same entity that had been acknowledged before they were sent (a lower revision than
// something that finished earlier).
func reordered(ops []*op, from, to time.Time) int {
	byEntity := map[string][]*op{}
	for _, o := range ops {
		if o.id != "" && o.ok {
			byEntity[o.entity] = append(byEntity[o.entity], o)
		}
	}
	n := 0
	for _, es := range byEntity {
		sort.Slice(es, func(i, j int) bool { return es[i].ret.Before(es[j].ret) })
		prefixMax := make([]uint32, len(es)) // highest revision among es[:i+1]
		for i, o := range es {
			prefixMax[i] = o.rev
			if i > 0 {
				prefixMax[i] = max(prefixMax[i], prefixMax[i-1])
			}
		}
		for _, o := range es {
			if o.call.Before(from) || !o.call.Before(to) {
				continue
			}
			// The commands that returned before o was sent must all have lower revisions.
			k := sort.Search(len(es), func(i int) bool { return !es[i].ret.Before(o.call) })
			if k > 0 && prefixMax[k-1] >= o.rev {
				n++
			}
		}
	}
	return n
}
