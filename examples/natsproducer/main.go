// Command natsproducer sends bank-account commands straight onto NATS, as a producer that is not a gRPC
// service would (an IoT gateway, a script, a service in another language): one synchronously on the
// request subject, then one asynchronously through the durable intake, reading its outcome. Against the
// quickstart (`make run`): go run ./examples/natsproducer -account acc-7
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

func main() {
	url := flag.String("s", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (env NATS_URL)")
	account := flag.String("account", "acc-"+nuid.Next()[:6], "bank account id")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *url, *account, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "natsproducer:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// command is a bank-account command as the producer API takes it: headers and a JSON body.
func command(subject, account, typ, body string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set("Cos-Entity-Id", account)
	m.Header.Set("Cos-Command-Type", typ)
	m.Header.Set("Content-Type", "application/json")
	m.Data = []byte(body)
	return m
}

func run(ctx context.Context, url, account string, out io.Writer) error {
	nc, err := nats.Connect(url, nats.Name("natsproducer"))
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	// Synchronous: a request on cos.process; the reply is the outcome.
	reply, err := nc.RequestMsgWithContext(ctx, command("cos.process", account, "bankaccount.v1.OpenAccount", `{"owner":"alice","initialBalance":"1000"}`))
	if err != nil {
		return fmt.Errorf("open %s: %w", account, err)
	}
	if reply.Header.Get("Cos-Status") != "0" {
		return fmt.Errorf("open %s: status %s: %s", account, reply.Header.Get("Cos-Status"), reply.Header.Get("Cos-Status-Message"))
	}
	fmt.Fprintf(out, "sync: opened %s at revision %s: %s\n", account, reply.Header.Get("Cos-Revision"), reply.Data)

	// Asynchronous: publish to the intake (the PubAck means "durably accepted"), then read the outcome
	// on cos.outcomes.<command id>. Subscribing first means the outcome cannot be missed; it is also
	// kept in the COS_OUTCOMES stream.
	commandID := "credit-" + nuid.Next()
	outcomes, err := nc.SubscribeSync("cos.outcomes." + commandID)
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	m := command("cos.intake", account, "bankaccount.v1.Credit", `{"amount":"250"}`)
	m.Header.Set("Nats-Msg-Id", commandID) // the deduplication key and the command id
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return fmt.Errorf("publish to the intake: %w", err)
	}
	fmt.Fprintf(out, "async: accepted as intake sequence %d\n", ack.Sequence)
	o, err := outcomes.NextMsgWithContext(ctx)
	if err != nil {
		return fmt.Errorf("outcome of %s: %w", commandID, err)
	}
	if o.Header.Get("Cos-Status") != "0" {
		return fmt.Errorf("credit %s: status %s: %s", account, o.Header.Get("Cos-Status"), o.Header.Get("Cos-Status-Message"))
	}
	fmt.Fprintf(out, "async: %s applied at revision %s: %s\n", commandID, o.Header.Get("Cos-Revision"), o.Data)
	return nil
}
