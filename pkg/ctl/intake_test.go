package ctl_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/intake"
	"github.com/cosnats/cosnats/pkg/layout"
)

// intake status reports the intake stream: a command published to it shows in its sequence and ack
// floor once decided; a disabled intake says so.
func TestIntakeStatus(t *testing.T) {
	t.Parallel()
	s := startSystem(t)
	st := decode(t, s.ok(t, "intake", "status", "--output", "json").stdout)
	if st["enabled"] != true || st["stream"] != layout.Default().IntakeStream() || st["subject"] != layout.Default().IntakeSubject() ||
		st["last_sequence"] != "0" {
		t.Fatalf("intake status: %v", st)
	}

	nc, err := s.node.Connect("ctl-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(layout.Default().IntakeSubject())
	m.Header.Set(intake.HeaderEntityID, "i-1")
	m.Header.Set(intake.HeaderCommandType, "bankaccount.v1.OpenAccount")
	m.Header.Set(intake.HeaderContentType, intake.ContentJSON)
	m.Header.Set(jetstream.MsgIDHeader, "open-i-1")
	m.Data = []byte(`{"owner":"ann","initialBalance":"5"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	costest.Eventually(t, 30*time.Second, "the intake command decided", func() bool {
		st = decode(t, s.ok(t, "intake", "status", "--output", "json").stdout)
		return st["last_sequence"] == "1" && st["ack_floor"] == "1" && st["pending"] == "0" && st["in_progress"] == "0"
	})
	if got := decode(t, s.ok(t, "get", "i-1").stdout); path(got, "state", "balance") != "5" {
		t.Fatalf("the intake's command: %v", got)
	}
	table := s.ok(t, "intake", "status").stdout
	for _, want := range []string{"enabled", "true", "last_sequence", "ack_floor", "stored_messages"} {
		if !strings.Contains(table, want) {
			t.Fatalf("intake status table lacks %q:\n%s", want, table)
		}
	}

	// A rejected command, read back over NATS: listed, and shown in full with the command itself.
	m = nats.NewMsg(layout.Default().IntakeSubject())
	m.Header.Set(intake.HeaderEntityID, "i-1")
	m.Header.Set(intake.HeaderCommandType, "bankaccount.v1.Debit")
	m.Header.Set(intake.HeaderContentType, intake.ContentJSON)
	m.Header.Set(jetstream.MsgIDHeader, "debit-i-1")
	m.Data = []byte(`{"amount":"500"}`)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	natsURL := "--nats-url=" + s.node.NATSURL
	costest.Eventually(t, 30*time.Second, "the rejected command listed", func() bool {
		return strings.Contains(s.ok(t, "intake", "rejected", natsURL).stdout, "debit-i-1")
	})
	rows := s.ok(t, "intake", "rejected", natsURL).stdout
	if !strings.Contains(rows, "FAILED_PRECONDITION") || !strings.Contains(rows, "insufficient funds") || strings.Contains(rows, "open-i-1") {
		t.Fatalf("intake rejected:\n%s", rows)
	}
	out := decode(t, s.ok(t, "intake", "outcome", "debit-i-1", natsURL).stdout)
	if path(out, "error", "code") != float64(9) || path(out, "command", "@type") != "type.googleapis.com/bankaccount.v1.Debit" || path(out, "entityId") != "i-1" {
		t.Fatalf("intake outcome: %v", out)
	}
	if table := s.ok(t, "intake", "outcome", "open-i-1", natsURL, "--output", "table").stdout; !strings.Contains(table, "OK") || !strings.Contains(table, "revision") {
		t.Fatalf("intake outcome table:\n%s", table)
	}
	s.want(t, 4, []string{"NOT_FOUND"}, "intake", "outcome", "nope", natsURL)
	s.want(t, 3, []string{"UNAVAILABLE"}, "intake", "rejected", "--nats-url=nats://"+closedAddr(t))
	s.want(t, 2, nil, "intake", "outcome", natsURL)

	off := startSystemWith(t, func(c *config.Config) { c.Intake.Enabled = false })
	if r := off.ok(t, "intake", "status"); strings.Join(strings.Fields(r.stdout), " ") != "enabled false" {
		t.Fatalf("disabled intake: %s", r)
	}
}

// The NATS commands authenticate like the processes do: a user and a password file (or the
// environment); without them the server refuses (exit 3).
func TestIntakeOutcomeWithNATSCredentials(t *testing.T) {
	t.Parallel()
	s := startSystemWith(t, func(c *config.Config) { c.NATS.ListenUser, c.NATS.ListenPassword = "ops", "s3cret" })
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	natsURL := "--nats-url=" + s.node.NATSURL
	s.want(t, 3, []string{"UNAVAILABLE", "Authorization"}, "intake", "rejected", natsURL)
	if r := s.cli(context.Background(), "intake", "rejected", natsURL, "--nats-user", "ops", "--nats-password-file", pw); r.code != 0 {
		t.Fatalf("with credentials: %s", r)
	}
	env := map[string]string{"COS_NATS_URL": s.node.NATSURL, "COS_NATS_USER": "ops", "COS_NATS_PASSWORD": "s3cret"}
	if r := runCLI(context.Background(), env, "intake", "outcome", "none", "--addr", s.addr); r.code != 4 {
		t.Fatalf("credentials from the environment: %s", r)
	}
	s.want(t, 2, []string{"one NATS authentication"}, "intake", "rejected", natsURL, "--nats-user", "ops", "--nats-token-file", pw)
}
