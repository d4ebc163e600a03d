package charttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cosnats/cosnats/internal/loopport"
)

// proc is a process the test started, with its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
	err  error         // exit status, set before done is closed
}

// startProc starts bin with args and exactly env (nothing inherited), in dir, logging to logDir.
// The process is killed when the test ends if it is still running.
func startProc(t testing.TB, name, bin string, args, env []string, dir, logDir string) *proc {
	t.Helper()
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits up to grace for the exit, as the kubelet does before SIGKILL. It
// returns how long the process took, and an error when it did not exit in time or exited non-zero.
func (p *proc) stop(grace time.Duration) (time.Duration, error) {
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("%s: SIGTERM: %w", p.name, err)
	}
	select {
	case <-p.done:
		took := time.Since(start)
		if p.err != nil {
			return took, fmt.Errorf("%s exited with %v after SIGTERM", p.name, p.err)
		}
		return took, nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return grace, fmt.Errorf("%s still running %s after SIGTERM (its grace period): the kubelet would kill it", p.name, grace)
	}
}

// tail returns the last lines of the process's log.
func (p *proc) tail(lines int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// logContains reports whether the process's log holds s.
func (p *proc) logContains(s string) bool {
	b, err := os.ReadFile(p.log)
	return err == nil && bytes.Contains(b, []byte(s))
}

// procs is every process of a test, for the logs on failure.
type procs struct {
	mu   sync.Mutex
	list []*proc
}

func (ps *procs) add(p *proc) *proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.list = append(ps.list, p)
	return p
}

// dumpOnFailure prints each process's last log lines when the test failed.
func (ps *procs) dumpOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ps.mu.Lock()
		defer ps.mu.Unlock()
		for _, p := range ps.list {
			state := "running"
			if !p.running() {
				state = fmt.Sprintf("exited: %v", p.err)
			}
			t.Logf("---- %s (%s), last lines of %s:\n%s", p.name, state, p.log, p.tail(40))
		}
	})
}

// freePort returns a loopback port nothing listens on right now, never the same one twice.
func freePort(t testing.TB) int {
	t.Helper()
	port, err := loopport.One()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// waitFor polls cond every 100 ms until it returns nil or the deadline passes, then fails the test
// with what was last wrong.
func waitFor(t testing.TB, ctx context.Context, what string, timeout time.Duration, cond func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		err := cond(ctx)
		if err == nil {
			return
		}
		// An attempt cut short by the deadline itself says nothing new: report the one before.
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s: %v", what, timeout, last)
		case <-tick.C:
		}
	}
}

// buildBinaries builds the project's roles, the example handlers and the nats-server version the
// main module pins, in the main module (its go.mod, not this test module's), into one directory.
func buildBinaries(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the binaries: %v", err)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goBin, "build", "-o", dir+string(filepath.Separator),
		"./cmd/gateway", "./cmd/worker", "./cmd/projector", "./cmd/cosprobe",
		"./examples/bankaccount/cmd/bankhandler", "./examples/bankaccount/cmd/bankreadside",
		"github.com/nats-io/nats-server/v2")
	cmd.Dir = root
	// A go.work would mix this module into the main module's build.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build in %s: %v\n%s", root, err, out)
	}
	t.Logf("built the binaries in %s", time.Since(start).Round(time.Millisecond))
	for _, b := range []string{"gateway", "worker", "projector", "cosprobe", "bankhandler", "bankreadside", "nats-server"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatal(errors.Join(fmt.Errorf("binary %s not built", b), err))
		}
	}
	return dir
}
