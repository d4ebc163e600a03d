package ctl

import (
	"context"
	"flag"
	"fmt"
	"time"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
)

var intakeStatusCommand = &command{
	name:    "intake status",
	args:    "",
	summary: "the asynchronous command intake: lag, in progress, limits (GetIntakeStatus)",
	help: `Reports the asynchronous command intake (cosnats.v1.IntakeService/GetIntakeStatus): whether it is
enabled (COS_INTAKE_ENABLED), its stream and subjects, the commands accepted and not yet taken
(pending: the intake's lag), those running, the ack floor and last sequence, what the stream holds
against its limits (0 = unlimited), and when the oldest undecided command was accepted. --output json
prints the RPC's response as protobuf JSON. A gateway without the service answers UNIMPLEMENTED
(exit 1).`,
	example: `cosctl intake status
cosctl intake status --output json`,
	output: "table",
	setup: func(_ *flag.FlagSet, c *call) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usagef(c.cmd, "intake status takes no argument, got %q", args)
			}
			return c.intakeStatus(ctx)
		}
	},
}

func (c *call) intakeStatus(ctx context.Context) error {
	conn, err := c.dialAdmin()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	st, err := natspb.NewIntakeServiceClient(conn).GetIntakeStatus(ctx, &natspb.GetIntakeStatusRequest{})
	if err != nil {
		return err
	}
	if c.format() == "json" {
		return writeJSON(c.stdout, protoJSON(st), true)
	}
	tw := newTable(c.stdout)
	fmt.Fprintf(tw, "enabled\t%t\n", st.GetEnabled())
	if !st.GetEnabled() {
		return tw.Flush()
	}
	limit := func(n int64) string {
		if n <= 0 {
			return "unlimited"
		}
		return fmt.Sprint(n)
	}
	oldest := "-"
	if t := st.GetOldestPending(); t != nil {
		oldest = fmt.Sprintf("%s (%s ago)", t.AsTime().UTC().Format(time.RFC3339), time.Since(t.AsTime()).Round(time.Second))
	}
	for _, row := range [][2]string{
		{"stream", st.GetStream()},
		{"subject", st.GetSubject()},
		{"outcome_subjects", st.GetOutcomeSubjects()},
		{"pending", fmt.Sprint(st.GetPending())},
		{"in_progress", fmt.Sprint(st.GetInProgress())},
		{"ack_floor", fmt.Sprint(st.GetAckFloor())},
		{"last_sequence", fmt.Sprint(st.GetLastSequence())},
		{"stored_messages", fmt.Sprintf("%d of %s", st.GetStoredMessages(), limit(st.GetMaxMessages()))},
		{"stored_bytes", fmt.Sprintf("%d of %s", st.GetStoredBytes(), limit(st.GetMaxBytes()))},
		{"oldest_pending", oldest},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}
