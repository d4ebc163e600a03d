package ctl_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	bankpb "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	"github.com/cosnats/cosnats/pkg/ctl"
)

// The real binary, as operators run it. It has no bank-account types compiled in (unlike this test),
// so it proves both ways of finding them: a descriptor-set file and the handler's gRPC reflection.
func TestBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "cosctl")
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build cosctl: %v", err)
	}
	build := exec.Command(goTool, "build", "-o", bin, "github.com/cosnats/cosnats/cmd/cosctl")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(bankpb.File_bankaccount_v1_bankaccount_proto)}}
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	descriptors := filepath.Join(dir, "bank.pb")
	if err := os.WriteFile(descriptors, b, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(env []string, args ...string) result {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(environ(), env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatalf("run cosctl: %v", err)
		}
		return result{code: code, stdout: out.String(), stderr: errb.String()}
	}
	check := func(r result, code int, args ...string) {
		t.Helper()
		if r.code != code {
			t.Fatalf("cosctl %q: want exit %d, got %s", args, code, r)
		}
	}

	r := run(nil, "--help")
	check(r, 0, "--help")
	for _, want := range []string{"Exit codes", "3  unavailable", "readside replay", "Examples, against the quickstart"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("--help lacks %q:\n%s", want, r.stdout)
		}
	}
	check(run(nil, "get", "acc-1", "--frobnicate"), ctl.ExitUsage)
	check(run(nil, "get", "acc-1", "--addr", closedAddr(t)), ctl.ExitUnavailable)

	s := startSystem(t)
	gw := []string{"COS_GATEWAY_ADDR=" + s.addr}
	host, port, _ := strings.Cut(s.handlerAddr, ":")
	handlerEnv := append([]string{"COS_WRITE_SIDE_HOST=" + host, "COS_WRITE_SIDE_PORT=" + port}, gw...)

	// Without the types the command cannot be built: a usage error saying what to give.
	r = run(gw, "process", "acc-b", "bankaccount.v1.OpenAccount", `{"owner":"bob"}`)
	check(r, ctl.ExitUsage)
	if !strings.Contains(r.stderr, "unknown message type bankaccount.v1.OpenAccount") {
		t.Fatalf("unknown type: %s", r)
	}
	// From the descriptor-set file.
	r = run(gw, "process", "acc-b", "bankaccount.v1.OpenAccount", `{"owner":"bob","initialBalance":"1000"}`, "--descriptors", descriptors)
	check(r, 0)
	if out := decode(t, r.stdout); path(out, "state", "balance") != "1000" || path(out, "state", "owner") != "bob" {
		t.Fatalf("process with --descriptors: %s", r)
	}
	// By reflection on the handler, given by flag and by the environment.
	r = run(gw, "process", "acc-b", "bankaccount.v1.Credit", `{"amount":"5"}`, "--handler", s.handlerAddr)
	check(r, 0)
	if out := decode(t, r.stdout); path(out, "state", "balance") != "1005" {
		t.Fatalf("process with --handler: %s", r)
	}
	r = run(handlerEnv, "get", "acc-b")
	check(r, 0)
	if out := decode(t, r.stdout); path(out, "state", "balance") != "1005" || r.stderr != "" {
		t.Fatalf("get with COS_WRITE_SIDE_HOST/PORT: %s", r)
	}
	// A state no source can render: type URL and base64 bytes, and a warning.
	r = run(gw, "get", "acc-b")
	check(r, 0)
	if out := decode(t, r.stdout); path(out, "state", "type_url") != "type.googleapis.com/bankaccount.v1.BankAccount" ||
		path(out, "state", "value") == "" || !strings.Contains(r.stderr, "warning: state type type.googleapis.com/bankaccount.v1.BankAccount is unknown") {
		t.Fatalf("get without types: %s", r)
	}
	check(run(gw, "get", "nobody"), ctl.ExitNotFound)

	// A watch ends on SIGINT with exit 0, after printing what it saw.
	watch := exec.Command(bin, "watch", "acc-b", "--from-revision", "1", "--descriptors", descriptors)
	watch.Env = append(environ(), gw...)
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var werr bytes.Buffer
	watch.Stderr = &werr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	for range 2 {
		if !lines.Scan() {
			_ = watch.Process.Kill()
			t.Fatalf("watch printed no line: %v %s", lines.Err(), werr.String())
		}
		if ev := decode(t, lines.Text()); ev["entity_id"] != "acc-b" {
			t.Fatalf("watch line %s", lines.Text())
		}
	}
	if err := watch.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _ = io.Copy(io.Discard, stdout) // Wait closes the pipe: read it to the end first
		done <- watch.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watch after SIGINT: %v %s", err, werr.String())
		}
	case <-time.After(20 * time.Second):
		_ = watch.Process.Kill()
		t.Fatal("watch did not end on SIGINT")
	}
}

// environ is the test's environment without COS_* variables, so the binary sees only what a case sets.
func environ() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COS_") {
			out = append(out, kv)
		}
	}
	return out
}
