package ctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
)

// plainEvery is how often progress is printed as plain lines (stderr not a terminal): often enough
// for a log, not a line per poll.
const plainEvery = 5 * time.Second

var replayCommand = &command{
	name:    "readside replay",
	aliases: []string{"readside rebuild"},
	args:    "--id ID [--shard N] [--no-wait] [--interval DURATION]",
	summary: "restart a read side from the first event and follow it until caught up (alias: rebuild)",
	help: `Rebuilds a read side: restarts it from the first event (RestartReadSide, or RestartReadSideByShard
with --shard), then polls GetReadSideStatus every --interval until no event is pending on the chosen
shards, drawing progress on stderr: events done / total, rate and ETA. Total is what the restart
gave the shards to deliver again, as the gateway counted it at the reset (it grows if events keep
coming). On a terminal the bar is redrawn in place; otherwise a plain line is printed every 5 s.
--output json prints JSON progress lines on stdout instead ({"read_side_id", "shards", "done",
"total", "pending", "percent", "rate", "eta_seconds", "elapsed_seconds", "finished"}). --no-wait
returns right after the restart.

A paused or stopped shard cannot catch up: the replay then refuses to start (exit 1) and says
which; resume it first. A failing shard is shown and waited for (its failure policy retries).
Interrupting the wait (Ctrl-C) exits 1; the replay itself goes on (follow it with 'cosctl readside
status').`,
	example: `cosctl readside replay --id bank-balances
cosctl readside rebuild --id bank-balances --shard 3 --output json`,
	output: "table",
	setup: func(fs *flag.FlagSet, c *call) func(context.Context, []string) error {
		var f readSideFlags
		f.register(fs, true)
		noWait := fs.Bool("no-wait", false, "return right after the restart")
		interval := fs.Duration("interval", time.Second, "how often to poll the status, a `DURATION`")
		return func(ctx context.Context, args []string) error {
			if err := f.need(c, args); err != nil {
				return err
			}
			if *interval <= 0 {
				return usagef(c.cmd, "--interval must be positive, got %v", *interval)
			}
			return c.replay(ctx, &f, *noWait, *interval)
		}
	},
}

func (c *call) replay(ctx context.Context, f *readSideFlags, noWait bool, interval time.Duration) error {
	where := "every shard"
	if f.shardSet {
		where = fmt.Sprintf("shard %d", f.shard)
	}
	// A paused or stopped shard would never catch up: refuse before restarting anything.
	before, err := c.readSideStatus(ctx, f.id)
	if err != nil {
		return err
	}
	if stuck := blocked(chosen(before.GetShards(), f), false); stuck != "" {
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("read side %s cannot be replayed now: %s; resume it first (cosctl readside resume --id %s)", f.id, stuck, f.id)}
	}
	ok, err := c.manage(ctx, opRestart, f)
	if err != nil {
		return err
	}
	if !ok {
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("restart of read side %s on %s: the server answered successful=false", f.id, where)}
	}
	if noWait {
		if c.format() == "json" {
			res := opResult{ReadSideID: f.id, Successful: true}
			if f.shardSet {
				res.Shard = &f.shard
			}
			return writeJSON(c.stdout, res, false)
		}
		fmt.Fprintf(c.stdout, "restarted read side %s on %s (not waiting)\n", f.id, where)
		return nil
	}
	conn, err := c.dialAdmin()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := natspb.NewReadSideStatusServiceClient(conn)
	poll := func() (*natspb.GetReadSideStatusResponse, error) {
		pctx, cancel := context.WithTimeout(ctx, c.g.timeout)
		defer cancel()
		return client.GetReadSideStatus(pctx, &natspb.GetReadSideStatusRequest{ReadSideId: f.id})
	}
	p := &progress{readSide: f.id, start: time.Now()}
	out := c.progressWriter()
	first := true
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		resp, err := poll()
		p.now = time.Now()
		switch {
		case ctx.Err() != nil:
			out.finish()
			return interrupted(f.id)
		case err == nil:
			shards := chosen(resp.GetShards(), f)
			if len(shards) == 0 {
				return &exitError{code: ExitNotFound, msg: fmt.Sprintf("NOT_FOUND: read side %s has no shard to follow on %s", f.id, where)}
			}
			if first {
				p.total = restartTotal(chosen(before.GetShards(), f), shards)
			}
			p.observe(shards, first)
			first = false
			if stuck := blocked(shards, true); stuck != "" {
				out.show(p, true)
				return &exitError{code: ExitFailed, msg: fmt.Sprintf("replay of read side %s cannot progress: %s; resume it (cosctl readside resume --id %s) and run the replay again", f.id, stuck, f.id)}
			}
		case !first && (status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded):
			// A blip of the gateway: the replay goes on server-side, keep following it.
			p.note = "gateway unavailable, retrying"
		default:
			out.finish()
			return err
		}
		if !first && p.pending == 0 {
			out.show(p, true)
			if c.format() != "json" {
				fmt.Fprintf(c.stdout, "read side %s caught up on %s in %s (%d events delivered since the restart)\n",
					f.id, where, p.now.Sub(p.start).Round(time.Millisecond), p.total)
			}
			return nil
		}
		out.show(p, false)
		select {
		case <-ctx.Done():
			out.finish()
			return interrupted(f.id)
		case <-tick.C:
		}
	}
}

// interrupted is the end of a wait cut short: the replay itself goes on.
func interrupted(id string) error {
	return &exitError{code: ExitFailed, msg: fmt.Sprintf("interrupted: the replay of read side %s goes on; follow it with 'cosctl readside status --id %s'", id, id)}
}

// chosen keeps the shards the replay follows.
func chosen(all []*natspb.ReadSideShardStatus, f *readSideFlags) []*natspb.ReadSideShardStatus {
	if !f.shardSet {
		return all
	}
	return slices.DeleteFunc(slices.Clone(all), func(s *natspb.ReadSideShardStatus) bool { return s.GetClusterShardNumber() != f.shard })
}

// blocked names the shards that cannot progress until an operator resumes them (only those with
// events pending when onlyPending).
func blocked(shards []*natspb.ReadSideShardStatus, onlyPending bool) string {
	var out []string
	for _, s := range shards {
		if (s.GetPending() > 0 || !onlyPending) && (s.GetPaused() || s.GetStopped()) {
			out = append(out, fmt.Sprintf("shard %d is %s", s.GetClusterShardNumber(), shardState(s)))
		}
	}
	return strings.Join(out, ", ")
}

// progress is the state of a replay as last observed.
type progress struct {
	readSide     string
	shards       []uint64
	start, now   time.Time
	total, done  uint64
	pending      uint64
	note         string // what is wrong meanwhile: a failing shard, the gateway away
	lastRendered time.Time
}

// restartTotal is how many events the restart gave the shards to deliver again, as the gateway
// recorded it for each shard's restart (0 when a shard has no record newer than before the restart:
// a gateway of an older version).
func restartTotal(before, after []*natspb.ReadSideShardStatus) uint64 {
	prev := map[uint64]*natspb.ReadSideShardStatus{}
	for _, s := range before {
		prev[s.GetClusterShardNumber()] = s
	}
	var total uint64
	for _, s := range after {
		at := s.GetRestartedAt()
		if at == nil || proto.Equal(at, prev[s.GetClusterShardNumber()].GetRestartedAt()) {
			return 0
		}
		total += s.GetReplayTotal()
	}
	return total
}

// observe takes in a status poll. Total starts as the events the restart gave the shards to deliver
// again (p.total, when known), or else as the pending events at the first poll, and grows when new
// events make done + pending exceed it; done never goes back.
func (p *progress) observe(shards []*natspb.ReadSideShardStatus, first bool) {
	p.shards = p.shards[:0]
	var pending uint64
	var failing []string
	for _, s := range shards {
		p.shards = append(p.shards, s.GetClusterShardNumber())
		pending += s.GetPending()
		if s.GetFailing() {
			failing = append(failing, fmt.Sprintf("shard %d failing: %s", s.GetClusterShardNumber(), oneLine(s.GetLastError())))
		}
	}
	p.pending = pending
	if first {
		p.total = max(p.total, pending)
	}
	if pending <= p.total && p.total-pending > p.done {
		p.done = p.total - pending
	}
	if p.done+pending > p.total {
		p.total = p.done + pending
	}
	p.note = strings.Join(failing, "; ")
}

func (p *progress) rate() float64 {
	el := p.now.Sub(p.start).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(p.done) / el
}

func (p *progress) percent() float64 {
	if p.total == 0 {
		return 100
	}
	return 100 * float64(p.done) / float64(p.total)
}

// eta is the time left at the average rate so far; false while nothing is done yet.
func (p *progress) eta() (time.Duration, bool) {
	r := p.rate()
	if r <= 0 {
		return 0, p.pending == 0
	}
	return time.Duration(float64(p.total-p.done) / r * float64(time.Second)), true
}

// text is the one-line progress bar.
func (p *progress) text() string {
	const width = 30
	filled := width
	if p.total > 0 {
		filled = int(uint64(width) * p.done / p.total)
	}
	eta := "?"
	if d, ok := p.eta(); ok {
		eta = d.Round(time.Second).String()
	}
	line := fmt.Sprintf("replay %s [%s%s] %d/%d events %3.0f%% %.1f ev/s ETA %s",
		p.readSide, strings.Repeat("#", filled), strings.Repeat(".", width-filled), p.done, p.total, p.percent(), p.rate(), eta)
	if p.note != "" {
		line += " (" + p.note + ")"
	}
	return line
}

// progressJSON is a JSON progress line.
type progressJSON struct {
	ReadSideID     string   `json:"read_side_id"`
	Shards         []uint64 `json:"shards"`
	Done           uint64   `json:"done"`
	Total          uint64   `json:"total"`
	Pending        uint64   `json:"pending"`
	Percent        float64  `json:"percent"`
	Rate           float64  `json:"rate"`
	ETASeconds     *float64 `json:"eta_seconds"`
	ElapsedSeconds float64  `json:"elapsed_seconds"`
	Note           string   `json:"note,omitempty"`
	Finished       bool     `json:"finished"`
}

func (p *progress) json(finished bool) progressJSON {
	j := progressJSON{ReadSideID: p.readSide, Shards: slices.Clone(p.shards), Done: p.done, Total: p.total, Pending: p.pending,
		Percent: p.percent(), Rate: p.rate(), ElapsedSeconds: p.now.Sub(p.start).Seconds(), Note: p.note, Finished: finished}
	if d, ok := p.eta(); ok {
		s := d.Seconds()
		j.ETASeconds = &s
	}
	return j
}

// progressOut draws progress: redrawn in place on a terminal, plain lines otherwise, or JSON lines.
type progressOut struct {
	w     io.Writer
	mode  string // "tty", "plain", "json"
	drawn bool   // a tty line is on screen without its newline
}

func (c *call) progressWriter() *progressOut {
	switch {
	case c.format() == "json":
		return &progressOut{w: c.stdout, mode: "json"}
	case isTerminal(c.stderr):
		return &progressOut{w: c.stderr, mode: "tty"}
	default:
		return &progressOut{w: c.stderr, mode: "plain"}
	}
}

func (o *progressOut) show(p *progress, final bool) {
	switch o.mode {
	case "json":
		_ = writeJSON(o.w, p.json(final), false)
	case "tty":
		// \r back to the line start, \x1b[K clears what a longer previous line left.
		fmt.Fprintf(o.w, "\r%s\x1b[K", p.text())
		o.drawn = true
		if final {
			o.finish()
		}
	default:
		if final || p.lastRendered.IsZero() || p.now.Sub(p.lastRendered) >= plainEvery {
			fmt.Fprintln(o.w, p.text())
			p.lastRendered = p.now
		}
	}
}

// finish ends a bar left on screen, so what follows starts on its own line.
func (o *progressOut) finish() {
	if o.drawn {
		fmt.Fprintln(o.w)
		o.drawn = false
	}
}

// isTerminal tells whether w is a character device (a terminal), without a terminal library.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
