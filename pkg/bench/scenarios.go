package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Options shape a run.
type Options struct {
	Dir           string                                                         // scratch directory (stores); removed afterwards by the caller
	Warmup        time.Duration                                                  // unmeasured warm-up per measurement
	Duration      time.Duration                                                  // measured time per measurement
	Entities      int                                                            // entities of the many-entities scenarios (10,000)
	Concurrency   []int                                                          // closed-loop concurrencies of scenario 1
	ScaleEntities int                                                            // entities of the scale scenario (1,000,000); 0 skips it
	Replication   bool                                                           // run scenario 8's sync-always and R3 setups
	NATSURL       string                                                         // use an external NATS instead of the embedded one (scenarios 1–6)
	ChildNATS     func(dir string) (url string, pid int, stop func(), err error) // a nats-server in its own process, for memory readings
	ChildWorker   func(env []string) (pid int, stop func(), err error)           // a worker in its own process (env: its COS_* settings)
	Log           func(format string, args ...any)
	// Children starts the child processes of scenario 11 (distributed); nil skips it.
	Children Children
	// Only, when not empty, lists the scenarios to run by number ("1", "2", … as in BENCHMARKS.md).
	Only []string
	// Env are extra COS_* settings for every system started.
	Env []string
	// AssumedMax is the maximum rate used by the open-loop scenarios when scenario 1 does not run.
	AssumedMax float64
	// Setups, when not empty, limits scenario 8 to these of its setups: "r1-sync", "r3", "r3-sync".
	Setups []string
	// Measure is what scenarios 1 and 4 measure: "both" (or empty), "ours" or "floor" — one alone,
	// to profile it or to see it without the other's effects on the process.
	Measure string
}

func (o Options) ours() bool  { return o.Measure != "floor" }
func (o Options) floor() bool { return o.Measure != "ours" }

func (o Options) want(n string) bool {
	if len(o.Only) == 0 {
		return true
	}
	for _, x := range o.Only {
		if x == n {
			return true
		}
	}
	return false
}

// Run runs every scenario and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	r := &Report{Started: time.Now().UTC(), Machine: DescribeMachine()}
	base := Setup{Dir: filepath.Join(o.Dir, "main"), Replicas: 1, NATSURL: o.NATSURL, Env: o.Env}
	r.Mode = base.Mode()
	add := func(res Result) {
		o.Log("%-40s %-22s %9.0f ops/s  p50 %7.3f ms  p99 %7.3f ms  errors %d %s", res.Scenario, res.Variant, res.OpsPerSec, res.P50Ms, res.P99Ms, res.Errors, res.FirstError)
		r.Results = append(r.Results, res)
	}

	sys, err := Start(ctx, base)
	if err != nil {
		return nil, fmt.Errorf("start system: %w", err)
	}
	defer func() { sys.Close() }()
	floorAddr, stopFloor, err := StartFloor(ctx, sys.JS, sys.Handler, 1)
	if err != nil {
		return nil, err
	}
	defer stopFloor()
	floor, closeFloor, err := dialClient(floorAddr)
	if err != nil {
		return nil, err
	}
	defer closeFloor()

	// 1 + 9: many entities, and the floor at the same concurrency, from the steady state: every entity
	// has been written once (a worker reads an entity's head from the log at its first command; the
	// floor, which assumes it is the only writer, never does).
	if o.want("1") {
		if o.ours() {
			prime(ctx, sys.Client, "e-", o.Entities)
		}
		if o.floor() {
			prime(ctx, floor, "f-", o.Entities)
		}
	}
	var maxRate float64
	for _, c := range o.Concurrency {
		if !o.want("1") {
			break
		}
		var fl, res Result
		if o.floor() {
			fl = ClosedLoop(ctx, "Floor (irreducible work)", fmt.Sprintf("c=%d", c), c, o.Warmup, o.Duration, processOp(floor, "f-", o.Entities, 1))
		}
		if o.ours() {
			res = ClosedLoop(ctx, "ProcessCommand, many entities", fmt.Sprintf("c=%d", c), c, o.Warmup, o.Duration, processOp(sys.Client, "e-", o.Entities, 1))
			if o.floor() {
				res.Extra = map[string]float64{"ratio_to_floor": res.OpsPerSec / fl.OpsPerSec}
			}
			add(res)
			maxRate = max(maxRate, res.OpsPerSec)
		}
		if o.floor() {
			add(fl)
		}
	}

	if maxRate == 0 {
		maxRate = o.AssumedMax
	}

	// 2: one hot entity.
	for _, c := range []int{1, 16} {
		if !o.want("2") {
			break
		}
		before := sys.Node.Worker.Stats()
		res := ClosedLoop(ctx, "ProcessCommand, one hot entity", fmt.Sprintf("c=%d", c), c, o.Warmup, o.Duration, processOp(sys.Client, fmt.Sprintf("hot-%d", c), 1, 1))
		after := sys.Node.Worker.Stats()
		res.Extra = map[string]float64{"conflict_retries": float64(after.Conflicts - before.Conflicts)}
		add(res)
	}

	// 3: multi-event commands (one atomic batch each), here on R1 and below on R3.
	if o.want("3") {
		res := ClosedLoop(ctx, "ProcessCommand, 10 events per command", "c=64", 64, o.Warmup, o.Duration, processOp(sys.Client, "m-", o.Entities, 10))
		res.Extra = map[string]float64{"events_per_sec": res.OpsPerSec * 10}
		add(res)
	}
	if o.want("3") && o.Replication && o.NATSURL == "" {
		r3, err := Start(ctx, Setup{Dir: filepath.Join(o.Dir, "multi-r3"), Replicas: 3, Env: o.Env})
		if err != nil {
			return nil, fmt.Errorf("start the R3 system of scenario 3: %w", err)
		}
		res := ClosedLoop(ctx, "ProcessCommand, 10 events per command", "c=64, R3", 64, o.Warmup, o.Duration, processOp(r3.Client, "m-", o.Entities, 10))
		res.Extra = map[string]float64{"events_per_sec": res.OpsPerSec * 10}
		add(res)
		r3.Close()
	}

	// 4: open loop at fixed fractions of the measured maximum, on entities that already exist: a
	// closed-loop warm-up first writes to them (the floor's too), so the rows show the steady state
	// and not each entity's first command (which reads the log once per worker).
	if o.want("4") {
		if o.ours() {
			ClosedLoop(ctx, "warm-up", "", 64, 0, o.Warmup, processOp(sys.Client, "o-", o.Entities, 1))
		}
		if o.floor() {
			ClosedLoop(ctx, "warm-up", "", 64, 0, o.Warmup, processOp(floor, "fo-", o.Entities, 1))
		}
	}
	for _, f := range []float64{0.25, 0.5, 0.75} {
		if !o.want("4") {
			break
		}
		rate := f * maxRate
		variant := fmt.Sprintf("%.0f%% of max (%.0f/s)", f*100, rate)
		if o.ours() {
			before := sys.Node.Worker.Stats()
			res := OpenLoop(ctx, "ProcessCommand, open loop", variant, rate, 4096, o.Duration, processOp(sys.Client, "o-", o.Entities, 1))
			res.Extra["log_reads"] = float64(sys.Node.Worker.Stats().Reads - before.Reads)
			add(res)
		}
		if o.floor() {
			add(OpenLoop(ctx, "Floor, open loop", variant, rate, 4096, o.Duration, processOp(floor, "fo-", o.Entities, 1)))
		}
	}

	// 5: GetState of recently written entities (the server's caches are warm).
	if o.want("5") {
		add(ClosedLoop(ctx, "GetState, recently written", "c=64", 64, o.Warmup, o.Duration, getOp(sys.Client, "e-", o.Entities)))
	}
	sys.Close()

	// 6: read-side lag under load.
	if o.want("6") {
		if err := lagScenario(ctx, o, maxRate, add); err != nil {
			return nil, err
		}
	}

	// 8: durability and replication, against the floor on the same setup.
	if o.Replication && o.NATSURL == "" && o.want("8") {
		for _, set := range []Setup{
			{Replicas: 1, SyncAlways: true},
			{Replicas: 3},
			{Replicas: 3, SyncAlways: true},
		} {
			if name := set.name(); len(o.Setups) > 0 && !slices.Contains(o.Setups, name) {
				continue
			}
			set.Dir, set.Env = filepath.Join(o.Dir, fmt.Sprintf("r%d-sync%v", set.Replicas, set.SyncAlways)), o.Env
			ours, fl, err := measureSetup(ctx, set, o)
			if err != nil {
				return nil, err
			}
			if o.ours() {
				add(ours)
			}
			if o.floor() {
				add(fl)
			}
		}
	}

	// 10: a worker's memory under overload.
	if o.ChildNATS != nil && o.ChildWorker != nil && o.want("10") {
		results, err := overload(ctx, o)
		if err != nil {
			return nil, err
		}
		for _, res := range results {
			add(res)
		}
	}

	// 11: gateways, workers and a projector as separate processes over NATS, beside a floor that
	// crosses NATS once.
	if o.Children != nil && o.want("11") {
		if err := distributed(ctx, o, add); err != nil {
			return nil, err
		}
	}

	// 7: scale, with catch-up of a new read side over the whole log.
	if o.ScaleEntities > 0 && o.ChildNATS != nil && o.want("7") {
		results, notes, err := scale(ctx, o)
		if err != nil {
			return nil, err
		}
		for _, res := range results {
			add(res)
		}
		r.Notes = append(r.Notes, notes...)
	}
	return r, nil
}

// lagScenario measures read-side lag under a quarter and half of the maximum load.
func lagScenario(ctx context.Context, o Options, maxRate float64, add func(Result)) error {
	rsys, err := Start(ctx, Setup{Dir: filepath.Join(o.Dir, "readside"), Replicas: 1, NATSURL: o.NATSURL, ReadSide: true, Env: o.Env})
	if err != nil {
		return err
	}
	defer rsys.Close()
	for _, f := range []float64{0.25, 0.5} {
		rate := f * maxRate
		lag := rsys.ReadSide.MeasureLag(true)
		load := OpenLoop(ctx, "ProcessCommand, open loop with a read side", fmt.Sprintf("%.0f%% of max (%.0f/s)", f*100, rate), rate, 4096, o.Duration, processOp(rsys.Client, fmt.Sprintf("r%.0f-", f*100), o.Entities, 1))
		add(load)
		rsys.ReadSide.MeasureLag(false)
		add(lagResult(lag, load))
	}
	return nil
}

func dialClient(addr string) (cospb.ChiefOfStateServiceClient, func(), error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return cospb.NewChiefOfStateServiceClient(conn), func() { _ = conn.Close() }, nil
}

// processOp sends commands asking for events events each, round-robin over n entities.
func processOp(c cospb.ChiefOfStateServiceClient, prefix string, n, events int) Op {
	cmd := Command(events)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprint(prefix, i)
	}
	return func(ctx context.Context, _ int, seq int64) error {
		_, err := c.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: ids[seq%int64(n)], Command: cmd})
		return err
	}
}

// getOp reads n entities round-robin, starting at a stride so consecutive reads hit unrelated ones.
func getOp(c cospb.ChiefOfStateServiceClient, prefix string, n int) Op {
	return func(ctx context.Context, _ int, seq int64) error {
		id := fmt.Sprint(prefix, (seq*7919)%int64(n))
		_, err := c.GetState(ctx, &cospb.GetStateRequest{EntityId: id})
		return err
	}
}

// lagResult reports the read side's lag histogram as a result row.
func lagResult(h *Histogram, load Result) Result {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return Result{
		Scenario: "Read side: lag append → HandleReadSide", Variant: load.Variant,
		Ops: int64(h.Count()), Seconds: load.Seconds, OpsPerSec: float64(h.Count()) / load.Seconds,
		P50Ms: ms(h.Percentile(50)), P90Ms: ms(h.Percentile(90)), P99Ms: ms(h.Percentile(99)), P999Ms: ms(h.Percentile(99.9)), MaxMs: ms(h.Max()),
		Note: "latency columns are the lag; CPU is counted in the load row",
	}
}

// measureSetup runs many-entities c=64 and the floor on one setup.
func measureSetup(ctx context.Context, set Setup, o Options) (Result, Result, error) {
	sys, err := Start(ctx, set)
	if err != nil {
		return Result{}, Result{}, err
	}
	defer sys.Close()
	addr, stop, err := StartFloor(ctx, sys.JS, sys.Handler, set.Replicas)
	if err != nil {
		return Result{}, Result{}, err
	}
	defer stop()
	floor, closeFloor, err := dialClient(addr)
	if err != nil {
		return Result{}, Result{}, err
	}
	defer closeFloor()
	mode := fmt.Sprintf("c=64, R%d, sync %s", set.Replicas, map[bool]string{true: "always", false: "default"}[set.SyncAlways])
	var ours, fl, firstOurs, firstFloor Result
	if o.ours() {
		firstOurs = prime(ctx, sys.Client, "e-", o.Entities)
		ours = ClosedLoop(ctx, "ProcessCommand, many entities", mode, 64, o.Warmup, o.Duration, processOp(sys.Client, "e-", o.Entities, 1))
	}
	if o.floor() {
		firstFloor = prime(ctx, floor, "f-", o.Entities)
		fl = ClosedLoop(ctx, "Floor (irreducible work)", mode, 64, o.Warmup, o.Duration, processOp(floor, "f-", o.Entities, 1))
	}
	if fl.OpsPerSec > 0 {
		ours.Extra = map[string]float64{"ratio_to_floor": ours.OpsPerSec / fl.OpsPerSec}
	}
	// Each entity's first command: ours reads the entity's head from the log (it cannot know the entity
	// is new), the floor does not.
	ours.Extra = setExtra(ours.Extra, "first_command_per_sec", firstOurs.OpsPerSec)
	if firstFloor.OpsPerSec > 0 {
		ours.Extra["first_command_ratio_to_floor"] = firstOurs.OpsPerSec / firstFloor.OpsPerSec
	}
	return ours, fl, nil
}

func setExtra(m map[string]float64, k string, v float64) map[string]float64 {
	if m == nil {
		m = map[string]float64{}
	}
	m[k] = v
	return m
}

// prime writes one command to each of n entities at c=64, so that a measurement that follows sees the
// steady state rather than each entity's first command (for which a worker reads the log). The result
// is that first command's cost.
func prime(ctx context.Context, c cospb.ChiefOfStateServiceClient, prefix string, n int) Result {
	return ClosedLoop(ctx, "prime", "", 64, 0, 24*time.Hour, limitOps(n, processOp(c, prefix, n, 1)))
}

// heapInUse is this process's live heap after a full collection, in MiB.
func heapInUse() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// rssMiB reads a process's resident memory from /proc.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	var kb float64
	for _, line := range splitLines(string(b)) {
		if _, err := fmt.Sscanf(line, "VmRSS: %f kB", &kb); err == nil {
			return kb / 1024
		}
	}
	return 0
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// scale writes ScaleEntities entities with one event each against a nats-server in its own process,
// then reports its memory and disk use, our heap, cold GetState after a server restart, and how fast a
// new read side catches up with the whole log.
func scale(ctx context.Context, o Options) ([]Result, []string, error) {
	dir := filepath.Join(o.Dir, "scale")
	url, pid, stopNATS, err := o.ChildNATS(dir)
	if err != nil {
		return nil, nil, err
	}
	set := Setup{Dir: dir, Replicas: 1, NATSURL: url, Env: o.Env}
	sys, err := Start(ctx, set)
	if err != nil {
		stopNATS()
		return nil, nil, err
	}
	var out []Result
	var notes []string
	rssBefore, heapBefore := rssMiB(pid), heapInUse()
	n := o.ScaleEntities
	write := ClosedLoop(ctx, "Scale: write entities (1 event each)", fmt.Sprintf("%d entities, c=256", n), 256, 0, 24*time.Hour, limitOps(n, processOp(sys.Client, "s-", n, 1)))
	out = append(out, write)
	str, err := sys.JS.Stream(ctx, layout.Default().EventStream())
	if err != nil {
		sys.Close()
		stopNATS()
		return nil, nil, err
	}
	info, err := str.Info(ctx)
	if err != nil {
		sys.Close()
		stopNATS()
		return nil, nil, err
	}
	rssAfter, heapAfter := rssMiB(pid), heapInUse()
	notes = append(notes,
		fmt.Sprintf("Scale: nats-server resident memory %.0f MiB before, %.0f MiB after %d entities (%.0f bytes per entity); stream holds %d messages, %.1f MiB (%.0f bytes per event).",
			rssBefore, rssAfter, n, (rssAfter-rssBefore)*(1<<20)/float64(n), info.State.Msgs, float64(info.State.Bytes)/(1<<20), float64(info.State.Bytes)/float64(max(info.State.Msgs, 1))),
		fmt.Sprintf("Scale: live heap of the cosbench process (gateway, worker, handlers, load generator) %.1f MiB before and %.1f MiB after writing %d entities: the worker's caches are bounded (COS_STATE_CACHE_ENTRIES).",
			heapBefore, heapAfter, n))
	sys.Close()
	stopNATS()

	// Cold reads: a fresh server process, nothing cached.
	url, _, stopNATS, err = o.ChildNATS(dir)
	if err != nil {
		return nil, nil, err
	}
	defer func() { stopNATS() }()
	set.NATSURL, set.ReadSide = url, true
	sys, err = Start(ctx, set) // the read side is new: it replays the whole log
	if err != nil {
		return nil, nil, err
	}
	defer sys.Close()
	start := time.Now()
	cold := ClosedLoop(ctx, "GetState, cold (server restarted)", fmt.Sprintf("%d entities, c=64", n), 64, 0, o.Duration, getOp(sys.Client, "s-", n))
	cold.Note = "while a new read side replays the log"
	out = append(out, cold)
	// The catch-up shares the machine with the reads above while they run; its rate once they ended
	// is the catch-up alone.
	alone, aloneFrom := sys.ReadSide.Received(), time.Now()
	for sys.ReadSide.Received() < int64(n) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond) // a progress poll in a benchmark, not a test
	}
	took := time.Since(start).Seconds()
	catchUp := Result{Scenario: "Read side: catch-up (no-op handler)", Variant: fmt.Sprintf("%d events", n),
		Ops: sys.ReadSide.Received(), Seconds: took, OpsPerSec: float64(sys.ReadSide.Received()) / took}
	if rest := sys.ReadSide.Received() - alone; rest > 0 {
		catchUp.Extra = map[string]float64{"events_per_sec_after_the_reads": float64(rest) / time.Since(aloneFrom).Seconds()}
	}
	out = append(out, catchUp)
	return out, notes, nil
}

// limitOps stops an op after n calls in all (the closed loop ends when ops fail with errStop).
func limitOps(n int, op Op) Op {
	return func(ctx context.Context, w int, seq int64) error {
		if seq >= int64(n) {
			return ErrDone
		}
		return op(ctx, w, seq)
	}
}
