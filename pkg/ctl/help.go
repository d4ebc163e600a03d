package ctl

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

const toolIntro = `cosctl operates a chief-of-state system (cosnats) through a gateway's gRPC port: it sends commands
and reads state as JSON, follows events live, inspects and steers read sides, and reports the
command intake.

Usage:
  cosctl COMMAND [ARGS] [FLAGS]          flags may come before or after the arguments
  cosctl help COMMAND                    or: cosctl COMMAND --help
`

const toolNotes = `Everything goes over gRPC to the gateway (--addr), except 'intake outcome' and 'intake rejected',
which read the intake's stored outcomes from NATS (--nats-url, --nats-creds, --nats-prefix).

Exit codes (for scripts):
  0  success
  1  the server refused or the operation failed: any other gRPC status (a write handler's error,
     INVALID_ARGUMENT, FAILED_PRECONDITION, UNIMPLEMENTED, ...), or successful=false
  2  usage error: bad flags or arguments (also a message type no source knows, or JSON that does
     not fit it)
  3  unavailable: cannot connect, UNAVAILABLE, DEADLINE_EXCEEDED
  4  not found: NOT_FOUND (get of an entity with no event, an unknown read side)
  5  outcome unknown: ProcessCommand answered UNKNOWN (or was cut off after it was sent): the
     command may or may not have been applied; retry with the same --command-id to learn which
Errors are one line on stderr: "cosctl: CODE: message" (with the status details as JSON).

Environment:
  COS_GATEWAY_ADDR                          default --addr (else localhost:9000)
  COS_ADMIN_ADDR                            default --admin-addr (else --addr)
  COS_WRITE_SIDE_DESCRIPTORS                default --descriptors
  COS_WRITE_SIDE_HOST, COS_WRITE_SIDE_PORT  default --handler (when both are set)
  COS_WRITE_SIDE_USE_TLS                    default --handler-tls
  COS_NATS_URL, COS_NATS_CREDS              default --nats-url (else nats://127.0.0.1:4222), --nats-creds
  COS_NATS_USER, COS_NATS_PASSWORD(_FILE),  default --nats-user, --nats-password-file,
  COS_NATS_TOKEN(_FILE), COS_NATS_NKEY_FILE --nats-token-file, --nats-nkey-file
  COS_NATS_TLS_CA_FILE                      default --nats-ca
  COS_NATS_PREFIX                           default --nats-prefix (else COS)

Examples, against the quickstart (go run ./examples/bankaccount/cmd/bankdemo; its write handler
serves gRPC reflection on 127.0.0.1:50051 when that port is free):
  cosctl process acc-1 bankaccount.v1.OpenAccount '{"owner":"alice","initialBalance":"1000"}' --handler 127.0.0.1:50051
  cosctl get acc-1 --handler 127.0.0.1:50051
  cosctl watch acc-1 --from-revision 1 --handler 127.0.0.1:50051
  cosctl readside status
  cosctl readside replay --id bank-balances
`

func (c *call) toolHelp(w io.Writer) {
	fmt.Fprint(w, toolIntro)
	fmt.Fprintln(w, "\nCommands:")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-18s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintln(w, "\nGlobal flags (every command):")
	fs := flag.NewFlagSet("cosctl", flag.ContinueOnError)
	var g globals
	g.defaults(c.getenv)
	g.register(fs)
	printFlags(w, fs, nil)
	fmt.Fprintln(w)
	fmt.Fprint(w, toolNotes)
}

func (c *call) groupHelp(w io.Writer, group string) {
	fmt.Fprintf(w, "cosctl %s: %s\n\nCommands:\n", group, groups[group])
	for _, cmd := range commands {
		if strings.HasPrefix(cmd.name, group+" ") {
			fmt.Fprintf(w, "  cosctl %s %s\n      %s\n", cmd.name, cmd.args, cmd.summary)
		}
	}
	fmt.Fprintf(w, "\nRun 'cosctl %s COMMAND --help' for a command's flags and examples.\n", group)
}

func (c *call) commandHelp(w io.Writer, cmd *command, fs *flag.FlagSet, own map[string]bool) {
	fmt.Fprintf(w, "Usage: cosctl %s %s\n", cmd.name, cmd.args)
	if len(cmd.aliases) > 0 {
		fmt.Fprintf(w, "Alias: cosctl %s\n", strings.Join(cmd.aliases, ", cosctl "))
	}
	fmt.Fprintf(w, "\n%s\n", cmd.help)
	if len(own) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		printFlags(w, fs, func(name string) bool { return own[name] })
	}
	fmt.Fprintf(w, "\nGlobal flags (default --output for this command: %s):\n", cmd.output)
	printFlags(w, fs, func(name string) bool { return !own[name] })
	fmt.Fprintln(w, "\nExamples (against the quickstart):")
	for _, line := range strings.Split(cmd.example, "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
	fmt.Fprintln(w, "\nExit codes: 0 ok, 1 failed/refused, 2 usage, 3 unavailable, 4 not found, 5 outcome unknown (cosctl --help).")
}

// printFlags lists the flags keep selects, GNU style (--name VALUE).
func printFlags(w io.Writer, fs *flag.FlagSet, keep func(string) bool) {
	fs.VisitAll(func(f *flag.Flag) {
		if keep != nil && !keep(f.Name) {
			return
		}
		value, usage := flag.UnquoteUsage(f)
		head := "--" + f.Name
		if value != "" {
			head += " " + value
		}
		switch f.DefValue {
		case "", "0", "false", "0s":
		default:
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  %-26s %s\n", head, usage)
	})
}
