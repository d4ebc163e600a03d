package ctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
)

// readSideFlags are --id and --shard of the read-side commands.
type readSideFlags struct {
	id       string
	shard    uint64
	shardSet bool
}

func (f *readSideFlags) register(fs *flag.FlagSet, withShard bool) {
	fs.StringVar(&f.id, "id", "", "read side `ID` (readSideId)")
	if withShard {
		fs.Func("shard", "only shard `N` (the …ByShard RPC); default: every shard", uintFlag(&f.shard, &f.shardSet, 64))
	}
}

func (f *readSideFlags) need(c *call, args []string) error {
	if len(args) != 0 {
		return usagef(c.cmd, "unexpected argument(s) %q (the read side is given with --id)", args)
	}
	if f.id == "" {
		return usagef(c.cmd, "--id is required")
	}
	return nil
}

var readSideStatusCommand = &command{
	name:    "readside status",
	args:    "[--id ID]",
	summary: "per shard: offset, pending events, paused/stopped/failing, last error",
	help: `Shows the position and health of every shard of one read side (--id), or of every read side
(cosnats.v1.ReadSideStatusService/GetReadSideStatus):
  OFFSET    stream sequence of the last event the read side acknowledged (0 = none)
  PENDING   events not acknowledged yet (the lag)
  STATE     running; paused (by an operator); stopped (by the STOP/REPLAY_STOP policy); failing
            (retrying an event); combined with commas
  ATTEMPTS  failed deliveries of the failing event; LAST ERROR with its time and stream sequence
--output json prints the RPC's response as protobuf JSON (.proto field names, 64-bit numbers as
strings). An unknown read side is NOT_FOUND (exit 4).`,
	example: `cosctl readside status
cosctl readside status --id bank-balances --output json`,
	output: "table",
	setup: func(fs *flag.FlagSet, c *call) func(context.Context, []string) error {
		var f readSideFlags
		f.register(fs, false)
		return func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usagef(c.cmd, "unexpected argument(s) %q (the read side is given with --id)", args)
			}
			resp, err := c.readSideStatus(ctx, f.id)
			if err != nil {
				return err
			}
			if c.format() == "json" {
				return writeJSON(c.stdout, protoJSON(resp), true)
			}
			return printStatusTable(c.stdout, resp.GetShards())
		}
	},
}

func (c *call) readSideStatus(ctx context.Context, id string) (*natspb.GetReadSideStatusResponse, error) {
	conn, err := c.dialAdmin()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	return natspb.NewReadSideStatusServiceClient(conn).GetReadSideStatus(ctx, &natspb.GetReadSideStatusRequest{ReadSideId: id})
}

// shardState names a shard's condition in one word (or several, comma-separated).
func shardState(s *natspb.ReadSideShardStatus) string {
	var states []string
	switch {
	case s.GetStopped():
		states = append(states, "stopped") // a stopped shard is paused too: say it once
	case s.GetPaused():
		states = append(states, "paused")
	}
	if s.GetFailing() {
		states = append(states, "failing")
	}
	if len(states) == 0 {
		return "running"
	}
	return strings.Join(states, ",")
}

func printStatusTable(w io.Writer, shards []*natspb.ReadSideShardStatus) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "READ SIDE\tSHARD\tOFFSET\tPENDING\tSTATE\tATTEMPTS\tLAST ERROR")
	for _, s := range shards {
		lastErr := ""
		if e := s.GetLastError(); e != "" {
			lastErr = oneLine(e)
			if t := s.GetLastErrorTime(); t != nil {
				lastErr = t.AsTime().UTC().Format("2006-01-02T15:04:05Z") + " " + lastErr
			}
			if seq := s.GetFailedSequence(); seq != 0 {
				lastErr = fmt.Sprintf("seq %d %s", seq, lastErr)
			}
		}
		attempts := ""
		if s.GetAttempts() != 0 {
			attempts = fmt.Sprint(s.GetAttempts())
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\n", s.GetReadSideId(), s.GetClusterShardNumber(), s.GetOffset(),
			s.GetPending(), shardState(s), attempts, lastErr)
	}
	if len(shards) == 0 {
		fmt.Fprintln(tw, "(no read side: no projector has created read-side consumers yet)")
	}
	return tw.Flush()
}

var readSideOffsetsCommand = &command{
	name:    "readside offsets",
	args:    "--id ID [--shard N]",
	summary: "the read side's offsets (GetLatestOffset, GetLatestOffsetByShard)",
	help: `Shows, per shard, the offset of a read side: the stream sequence of the last event it acknowledged
(0 = none). Sequences are stream-wide, so the offsets of one shard grow but are not consecutive.
ReadSideManagerService/GetLatestOffset, or GetLatestOffsetByShard with --shard. --output json prints
the RPC's response as protobuf JSON.`,
	example: `cosctl readside offsets --id bank-balances
cosctl readside offsets --id bank-balances --shard 3 --output json`,
	output: "table",
	setup: func(fs *flag.FlagSet, c *call) func(context.Context, []string) error {
		var f readSideFlags
		f.register(fs, true)
		return func(ctx context.Context, args []string) error {
			if err := f.need(c, args); err != nil {
				return err
			}
			return c.offsets(ctx, &f)
		}
	},
}

func (c *call) offsets(ctx context.Context, f *readSideFlags) error {
	conn, err := c.dialAdmin()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	client := cospb.NewReadSideManagerServiceClient(conn)
	var offsets []*cospb.ReadSideOffset
	if f.shardSet {
		resp, err := client.GetLatestOffsetByShard(ctx, &cospb.GetLatestOffsetByShardRequest{ReadSideId: f.id, ClusterShardNumber: f.shard})
		if err != nil {
			return err
		}
		if c.format() == "json" {
			return writeJSON(c.stdout, protoJSON(resp), true)
		}
		offsets = []*cospb.ReadSideOffset{resp.GetOffsets()}
	} else {
		resp, err := client.GetLatestOffset(ctx, &cospb.GetLatestOffsetRequest{ReadSideId: f.id})
		if err != nil {
			return err
		}
		if c.format() == "json" {
			return writeJSON(c.stdout, protoJSON(resp), true)
		}
		offsets = resp.GetOffsets()
	}
	tw := newTable(c.stdout)
	fmt.Fprintln(tw, "READ SIDE\tSHARD\tOFFSET")
	for _, o := range offsets {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", f.id, o.GetClusterShardNumber(), o.GetOffset())
	}
	return tw.Flush()
}

// readSideOp is one of the manager's operations, each with an all-shards and a by-shard RPC.
type readSideOp struct {
	name    string // pause, resume, restart, skip
	summary string
	done    string // what the table output says happened
	rpcs    string
	help    string
	all     func(context.Context, cospb.ReadSideManagerServiceClient, string) (bool, error)
	byShard func(context.Context, cospb.ReadSideManagerServiceClient, string, uint64) (bool, error)
}

var (
	opPause = readSideOp{
		name: "pause", summary: "pause delivery to a read side, every shard or one", done: "paused", rpcs: "PauseReadSide, PauseReadSideByShard",
		help: `Pauses delivery to the read side: once it returns no read-side call starts until resume (calls
already running finish). The pause is stored with the shard's consumer and survives restarts.`,
		all: func(ctx context.Context, cl cospb.ReadSideManagerServiceClient, id string) (bool, error) {
			r, err := cl.PauseReadSide(ctx, &cospb.PauseReadSideRequest{ReadSideId: id})
			return r.GetSuccessful(), err
		},
		byShard: func(ctx context.Context, cl cospb.ReadSideManagerServiceClient, id string, s uint64) (bool, error) {
			r, err := cl.PauseReadSideByShard(ctx, &cospb.PauseReadSideByShardRequest{ReadSideId: id, ClusterShardNumber: s})
			return r.GetSuccessful(), err
		},
	}
	opResume = readSideOp{
		name: "resume", summary: "resume a paused or stopped read side", done: "resumed", rpcs: "ResumeReadSide, ResumeReadSideByShard",
		help: `Continues a paused or stopped read side where it was, and clears its failure record.`,
		all: func(ctx context.Context, cl cospb.ReadSideManagerServiceClient, id string) (bool, error) {
			r, err := cl.ResumeReadSide(ctx, &cospb.ResumeReadSideRequest{ReadSideId: id})
			return r.GetSuccessful(), err
		},
		byShard: func(ctx context.Context, cl cospb.ReadSideManagerServiceClient, id string, s uint64) (bool, error) {
			r, err := cl.ResumeReadSideByShard(ctx, &cospb.ResumeReadSideByShardRequest{ReadSideId: id, ClusterShardNumber: s})
			return r.GetSuccessful(), err
		},
	}
	opRestart = readSideOp{
		name: "restart", summary: "replay a read side from the first event", done: "restarted", rpcs: "RestartReadSide, RestartReadSideByShard",
		help: `Replays the read side from the first event: every event is delivered again (a paused shard stays
paused). To follow the replay until it has caught up, use 'cosctl readside replay'.`,
		all: func(ctx context.Context, cl cospb.ReadSideManagerServiceClient, id string) (bool, error) {
			r, err := cl.RestartReadSide(ctx, &cospb.RestartReadSideRequest{ReadSideId: id})
			return r.GetSuccessful(), err
		},
		byShard: func(ctx context.Context, cl cospb.ReadSideManagerServiceClient, id string, s uint64) (bool, error) {
			r, err := cl.RestartReadSideByShard(ctx, &cospb.RestartReadSideByShardRequest{ReadSideId: id, ClusterShardNumber: s})
			return r.GetSuccessful(), err
		},
	}
	opSkip = readSideOp{
		name: "skip", summary: "skip the event a read side is stuck on", done: "skipped one event of", rpcs: "SkipOffset, SkipOffsetByShard",
		help: `Skips exactly the event a shard is stuck on (the failed event on record); on a shard that is not
stuck, the next event after its offset. The read side never receives the skipped event. The server
answers successful=false when there is nothing to skip: cosctl then exits 1.`,
		all: func(ctx context.Context, cl cospb.ReadSideManagerServiceClient, id string) (bool, error) {
			r, err := cl.SkipOffset(ctx, &cospb.SkipOffsetRequest{ReadSideId: id})
			return r.GetSuccessful(), err
		},
		byShard: func(ctx context.Context, cl cospb.ReadSideManagerServiceClient, id string, s uint64) (bool, error) {
			r, err := cl.SkipOffsetByShard(ctx, &cospb.SkipOffsetByShardRequest{ReadSideId: id, ClusterShardNumber: s})
			return r.GetSuccessful(), err
		},
	}
)

func readSideOpCommand(op readSideOp) *command {
	return &command{
		name:    "readside " + op.name,
		args:    "--id ID [--shard N]",
		summary: op.summary + " (" + op.rpcs + ")",
		help: op.help + `

Without --shard every shard of the read side (ReadSideManagerService/` + strings.Split(op.rpcs, ", ")[0] + `), with
--shard N that shard only (` + strings.Split(op.rpcs, ", ")[1] + `). An unknown read side is NOT_FOUND (exit 4); a
shard out of range is INVALID_ARGUMENT (exit 1). --output json prints
{"read_side_id", "shard" (absent for every shard), "successful"}.`,
		example: "cosctl readside " + op.name + " --id bank-balances\ncosctl readside " + op.name + " --id bank-balances --shard 3",
		output:  "table",
		setup: func(fs *flag.FlagSet, c *call) func(context.Context, []string) error {
			var f readSideFlags
			f.register(fs, true)
			return func(ctx context.Context, args []string) error {
				if err := f.need(c, args); err != nil {
					return err
				}
				return c.readSideOp(ctx, op, &f)
			}
		},
	}
}

// opResult is the JSON form of a manager operation's answer.
type opResult struct {
	ReadSideID string  `json:"read_side_id"`
	Shard      *uint64 `json:"shard,omitempty"`
	Successful bool    `json:"successful"`
}

func (c *call) readSideOp(ctx context.Context, op readSideOp, f *readSideFlags) error {
	ok, err := c.manage(ctx, op, f)
	if err != nil {
		return err
	}
	res := opResult{ReadSideID: f.id, Successful: ok}
	where := "every shard"
	if f.shardSet {
		res.Shard = &f.shard
		where = fmt.Sprintf("shard %d", f.shard)
	}
	if c.format() == "json" {
		if err := writeJSON(c.stdout, res, false); err != nil {
			return err
		}
	} else if ok {
		fmt.Fprintf(c.stdout, "%s read side %s on %s\n", op.done, f.id, where)
	}
	if !ok {
		why := ""
		if op.name == "skip" {
			why = " (nothing to skip)"
		}
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("%s of read side %s on %s: the server answered successful=false%s", op.name, f.id, where, why)}
	}
	return nil
}

// manage calls the operation's all-shards or by-shard RPC.
func (c *call) manage(ctx context.Context, op readSideOp, f *readSideFlags) (bool, error) {
	conn, err := c.dialAdmin()
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	client := cospb.NewReadSideManagerServiceClient(conn)
	if f.shardSet {
		return op.byShard(ctx, client, f.id, f.shard)
	}
	return op.all(ctx, client, f.id)
}
