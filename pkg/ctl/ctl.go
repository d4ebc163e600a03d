// Package ctl is cosctl, the operator's command line for a running chief-of-state system: it sends
// commands and reads state as JSON (converting with the application's message types, found by
// pkg/schema), follows events live, steers and inspects read sides, and reports the command intake.
// Everything goes over gRPC to a gateway, except reading the intake's stored outcomes (intake outcome,
// intake rejected), which only NATS holds.
//
// Main is the whole program; cmd/cosctl only wires it to the process. Exit codes are part of the
// interface (scripts branch on them): see the Exit constants.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Exit codes of cosctl.
const (
	ExitOK          = 0 // success
	ExitFailed      = 1 // the server refused or the operation failed (any other gRPC status)
	ExitUsage       = 2 // bad flags or arguments
	ExitUnavailable = 3 // cannot connect, UNAVAILABLE, DEADLINE_EXCEEDED
	ExitNotFound    = 4 // NOT_FOUND: unknown entity or read side
	ExitUnknown     = 5 // ProcessCommand's outcome is unknown: the command may or may not be applied
)

// Main runs cosctl with args (without the program name) and returns the exit code. It reads defaults
// from the process environment. ctx ending (SIGINT/SIGTERM in cmd/cosctl) stops what runs: a watch
// unsubscribes and exits 0, anything else fails.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, os.Getenv, stdout, stderr)
}

// run is Main with the environment given, so tests need not change the process's.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := &call{stdout: stdout, stderr: stderr, getenv: getenv}
	c.g.defaults(getenv)
	err := c.dispatch(ctx, args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	code, line := classify(err)
	fmt.Fprintf(stderr, "cosctl: %s\n", line)
	var u *usageError
	if errors.As(err, &u) && u.cmd != nil {
		fmt.Fprintf(stderr, "Run 'cosctl %s --help' for usage.\n", u.cmd.name)
	} else if errors.As(err, &u) {
		fmt.Fprintln(stderr, "Run 'cosctl --help' for usage.")
	}
	return code
}

// call is one invocation: where output goes, the global flags, the environment.
type call struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	g              globals
	cmd            *command
}

// command is one cosctl command: its help, its own flags and what it does.
type command struct {
	name    string // "get", "readside pause"
	args    string // positional arguments and own flags, for the synopsis
	summary string // one line, for the command list
	help    string // what it does, in full
	example string // against the quickstart
	output  string // default --output: "json" or "table"
	aliases []string
	// setup registers the command's own flags on fs and returns what runs it with the positional
	// arguments left after parsing.
	setup func(fs *flag.FlagSet, c *call) func(ctx context.Context, args []string) error
}

// commands is every command, in the order the help lists them.
var commands = []*command{
	processCommand, getCommand, watchCommand,
	readSideStatusCommand, readSideOffsetsCommand,
	readSideOpCommand(opPause), readSideOpCommand(opResume), readSideOpCommand(opRestart), readSideOpCommand(opSkip),
	replayCommand, intakeStatusCommand, intakeOutcomeCommand, intakeRejectedCommand,
}

// groups are the words that need a second one ("readside pause").
var groups = map[string]string{
	"readside": "inspect and steer read sides (ReadSideManagerService, ReadSideStatusService)",
	"intake":   "the asynchronous command intake (IntakeService; its stored outcomes over NATS)",
}

func findCommand(name string) *command {
	for _, cmd := range commands {
		if cmd.name == name || slices.Contains(cmd.aliases, name) {
			return cmd
		}
	}
	return nil
}

// dispatch parses the global flags placed before the command, finds the command, parses its flags
// (global ones included, anywhere among the arguments) and runs it.
func (c *call) dispatch(ctx context.Context, args []string) error {
	top := flag.NewFlagSet("cosctl", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	c.g.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.toolHelp(c.stdout)
			return err
		}
		return usagef(nil, "%v", err)
	}
	rest := top.Args()
	if len(rest) == 0 {
		c.toolHelp(c.stderr)
		return usagef(nil, "no command given")
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		return c.helpFor(rest)
	}
	if _, ok := groups[name]; ok {
		if len(rest) == 0 {
			c.groupHelp(c.stderr, name)
			return usagef(nil, "%s needs a subcommand", name)
		}
		if isHelpFlag(rest[0]) {
			c.groupHelp(c.stdout, name)
			return flag.ErrHelp
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	cmd := findCommand(name)
	if cmd == nil {
		return usagef(nil, "unknown command %q", name)
	}
	c.cmd = cmd
	fs := flag.NewFlagSet("cosctl "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runCmd := cmd.setup(fs, c)
	own := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { own[f.Name] = true })
	c.g.register(fs)
	pos, err := parseInterleaved(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		c.commandHelp(c.stdout, cmd, fs, own)
		return err
	}
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	if err := c.g.validate(); err != nil {
		return usagef(cmd, "%v", err)
	}
	return runCmd(ctx, pos)
}

func isHelpFlag(s string) bool {
	switch s {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// helpFor serves `cosctl help [COMMAND...]`.
func (c *call) helpFor(words []string) error {
	if len(words) == 0 {
		c.toolHelp(c.stdout)
		return flag.ErrHelp
	}
	name := strings.Join(words, " ")
	if _, ok := groups[name]; ok {
		c.groupHelp(c.stdout, name)
		return flag.ErrHelp
	}
	cmd := findCommand(name)
	if cmd == nil {
		return usagef(nil, "no help for unknown command %q", name)
	}
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	cmd.setup(fs, c)
	own := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { own[f.Name] = true })
	c.g.register(fs)
	c.commandHelp(c.stdout, cmd, fs, own)
	return flag.ErrHelp
}

// parseInterleaved parses flags wherever they are among the positional arguments (the flag package
// stops at the first positional one), so `cosctl get acc-1 --output table` works as people type it.
// "--" ends the flags: what follows is positional even when it starts with "-".
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError is a mistake in the command line: exit 2, with a pointer to the help.
type usageError struct {
	cmd *command
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usagef(cmd *command, format string, a ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, a...)}
}

// exitError is a failure that is not a gRPC status, with the exit code it deserves.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
