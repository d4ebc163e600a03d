package fault

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
)

// stored is one event read back from the log.
type stored struct {
	rev   uint32
	state int64
	id    string // the command id that produced it
}

// readLogs reads every event of the given entities, in stream order, with one ordered consumer (a
// request per message would be hundreds of thousands of API calls after a long soak, and the JetStream
// API answers "temporarily unavailable" to some of them while a cluster settles). The ordered consumer
// recreates itself across such hiccups; only the overall deadline ends it.
func readLogs(ctx context.Context, s jetstream.Stream, ids []string) (map[string][]stored, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	bySubject := map[string]string{}
	out := map[string][]stored{}
	for _, id := range ids {
		key, err := entity.NewKey(id, numShards)
		if err != nil {
			return nil, err
		}
		bySubject[layout.Default().EventSubject(key)] = id
		out[id] = nil
	}
	info, err := s.Info(ctx)
	for err != nil && ctx.Err() == nil {
		time.Sleep(time.Second) // the stream's leader is being elected
		info, err = s.Info(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	last := info.State.LastSeq
	if last == 0 {
		return out, nil
	}
	// Events only: the stream also holds read barriers, which expire (the last sequence may be one).
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{layout.Default().AllEventSubjects()}})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	it, err := c.Messages()
	if err != nil {
		return nil, fmt.Errorf("read the log: %w", err)
	}
	defer it.Stop()
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		m, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("read the log (up to sequence %d): %w", last, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("metadata: %w", err)
		}
		if id, ok := bySubject[m.Subject()]; ok {
			var w cospb.EventWrapper
			if err := proto.Unmarshal(m.Data(), &w); err != nil {
				return nil, fmt.Errorf("decode %d: %w", meta.Sequence.Stream, err)
			}
			out[id] = append(out[id], stored{rev: w.GetMeta().GetRevisionNumber(), state: costest.Value(w.GetResultingState()),
				id: m.Headers().Get(eventlog.HeaderCommandID)})
		}
		if meta.NumPending == 0 { // the load has stopped: no event comes after this one
			return out, nil
		}
	}
}

// verdict is what the checks found.
type verdict struct {
	problems []string
	// per command id: what went wrong with it
	lost       map[string]bool // answered OK, not in the log (or with another revision)
	duplicated map[string]bool // in the log more than once
	reordered  map[string]bool // entities whose history is not linearizable
	unresolved int             // commands given up on by their client (outcome from the log)
	applied    int             // events in the logs
}

func (v *verdict) fail(format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, args...))
}

// opInput is an operation's input for the model.
type opInput struct {
	read bool
	id   string
}

// entityModel is one entity as a sequential object: a command moves it to the next revision and answers
// that revision; a read answers the current revision.
var entityModel = porcupine.Model{
	Init: func() any { return uint32(0) },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(uint32), input.(opInput), output.(uint32)
		if in.read {
			return out == s, s
		}
		return out == s+1, s + 1
	},
	DescribeOperation: func(input, output any) string {
		in := input.(opInput)
		if in.read {
			return fmt.Sprintf("get → %d", output)
		}
		return fmt.Sprintf("%s → %d", in.id, output)
	},
}

// check compares the history of the clients with the event log.
func check(logs map[string][]stored, entities []string, ops []*op, start time.Time) verdict {
	v := verdict{lost: map[string]bool{}, duplicated: map[string]bool{}, reordered: map[string]bool{}}
	byEntity := map[string][]*op{}
	for _, o := range ops {
		byEntity[o.entity] = append(byEntity[o.entity], o)
	}
	ns := func(t time.Time) int64 { return t.Sub(start).Nanoseconds() }
	for _, id := range entities {
		log := logs[id]
		v.applied += len(log)
		revOf := map[string]uint32{}
		for i, e := range log {
			if e.rev != uint32(i+1) {
				v.fail("%s: event %d has revision %d", id, i+1, e.rev)
			}
			if e.state != int64(i+1) {
				v.fail("%s: event %d has state %d: not applied on the previous state", id, i+1, e.state)
			}
			if _, seen := revOf[e.id]; seen {
				v.duplicated[e.id] = true
				v.fail("%s: command %s applied twice (revisions %d and %d)", id, e.id, revOf[e.id], e.rev)
			}
			revOf[e.id] = e.rev
		}
		known := map[string]bool{}
		var history []porcupine.Operation
		for _, o := range byEntity[id] {
			switch {
			case o.id == "" && o.ok:
				history = append(history, porcupine.Operation{ClientId: o.client, Input: opInput{read: true}, Call: ns(o.call), Output: o.rev, Return: ns(o.ret)})
			case o.id == "":
			case o.ok:
				known[o.id] = true
				if rev, in := revOf[o.id]; !in || rev != o.rev {
					v.lost[o.id] = true
					v.fail("%s: command %s answered OK with revision %d, the log has it at %d (0 = absent)", id, o.id, o.rev, rev)
				}
				history = append(history, porcupine.Operation{ClientId: o.client, Input: opInput{id: o.id}, Call: ns(o.call), Output: o.rev, Return: ns(o.ret)})
			default:
				known[o.id] = true
				v.unresolved++
				if rev, in := revOf[o.id]; in {
					// Applied, the client never learned it: it may have taken effect any time after its call.
					history = append(history, porcupine.Operation{ClientId: o.client, Input: opInput{id: o.id}, Call: ns(o.call), Output: rev, Return: math.MaxInt64 / 2})
				}
			}
		}
		for cmd := range revOf {
			if !known[cmd] {
				v.fail("%s: the log holds command %s that no client sent", id, cmd)
			}
		}
		sort.Slice(history, func(i, j int) bool { return history[i].Call < history[j].Call })
		res := porcupine.CheckOperationsTimeout(entityModel, history, time.Minute)
		if res != porcupine.Ok {
			v.reordered[id] = true
			v.fail("%s: the history of its %d operations is not linearizable (%v): commands were applied out of the order their clients saw", id, len(history), res)
		}
	}
	return v
}

// readSideProblems checks what the read side received: per entity, no revision before the one before it
// was handled, and every revision of the log at least once.
func readSideProblems(rec *costest.Recorder, want map[string]uint32) []string {
	var out []string
	for id, n := range want {
		var high uint32
		seen := map[uint32]bool{}
		for _, r := range rec.Received(id) {
			if r > high+1 {
				out = append(out, fmt.Sprintf("%s: the read side got revision %d after %d (deliveries %v)", id, r, high, short(rec.Received(id))))
				break
			}
			high = max(high, r)
			seen[r] = true
		}
		for r := uint32(1); r <= n; r++ {
			if !seen[r] {
				out = append(out, fmt.Sprintf("%s: revision %d of %d never reached the read side", id, r, n))
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

func short(revs []uint32) string {
	s := fmt.Sprint(revs)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// allDelivered reports whether the read side has every revision of want.
func allDelivered(rec *costest.Recorder, want map[string]uint32) bool {
	for id, n := range want {
		seen := map[uint32]bool{}
		for _, r := range rec.Received(id) {
			seen[r] = true
		}
		for r := uint32(1); r <= n; r++ {
			if !seen[r] {
				return false
			}
		}
	}
	return true
}

func joinLines(lines []string, limit int) string {
	if len(lines) > limit {
		lines = append(lines[:limit:limit], fmt.Sprintf("… and %d more", len(lines)-limit))
	}
	return strings.Join(lines, "\n")
}
