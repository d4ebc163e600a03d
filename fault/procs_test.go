package fault

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cosnats/cosnats/internal/loopport"
)

// bin holds the binaries built for the run (TestMain).
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cos-fault-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "fault suite: build:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	bin = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles our three binaries and a nats-server from the module version the project depends on.
func build(dir string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	pkgs := map[string]string{
		"gateway":     "github.com/cosnats/cosnats/cmd/gateway",
		"worker":      "github.com/cosnats/cosnats/cmd/worker",
		"projector":   "github.com/cosnats/cosnats/cmd/projector",
		"nats-server": "github.com/nats-io/nats-server/v2",
	}
	for name, pkg := range pkgs {
		args := []string{"build", "-o", filepath.Join(dir, name)}
		if os.Getenv("COS_FAULT_RACE") == "1" && name != "nats-server" {
			args = append(args, "-race")
		}
		cmd := exec.Command(goBin, append(args, pkg)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo(name))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return nil
}

func cgo(name string) string {
	if os.Getenv("COS_FAULT_RACE") == "1" && name != "nats-server" {
		return "1"
	}
	return "0"
}

// freePort is a loopback port nothing listens on (yet), for a child process to bind.
func freePort(t testing.TB) int {
	t.Helper()
	port, err := loopport.One()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// proc is one process of the topology: started, killed, restarted, watched for exits nobody asked for.
type proc struct {
	name  string
	bin   string
	args  []string
	env   []string
	log   string // file the process writes to
	probe string // host:port of /readyz, "" for none

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	expected bool // the next exit was asked for
	starts   int
	unasked  []string // exits nobody asked for
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(f, "\n===== start %d at %s =====\n", p.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.expected = cmd, done, false
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		if !p.expected {
			p.unasked = append(p.unasked, fmt.Sprintf("%s exited by itself at %s: %v", p.name, time.Now().Format("15:04:05.000"), err))
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// startCount is how many times the process was started.
func (p *proc) startCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() { p.signal(syscall.SIGKILL, 0) }

// term sends SIGTERM and waits up to grace for the process to exit, then kills it. It reports whether
// the process exited by itself within grace.
func (p *proc) term(grace time.Duration) bool { return p.signal(syscall.SIGTERM, grace) }

func (p *proc) signal(sig syscall.Signal, grace time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.expected = true
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-done:
			return true
		case <-time.After(grace):
			_ = cmd.Process.Kill()
		}
	}
	<-done
	return sig == syscall.SIGKILL
}

func (p *proc) alive() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// ready asks the process's /readyz.
func (p *proc) ready() (bool, string) {
	if p.probe == "" {
		return p.alive(), ""
	}
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.probe + "/readyz")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK, strings.TrimSpace(string(body))
}

func (p *proc) exits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unasked...)
}

// tail is the end of the process's log.
func (p *proc) tail(lines int) string {
	f, err := os.Open(p.log)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var all []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		all = append(all, s.Text())
	}
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// grepLog counts the log lines of the process that contain every one of words.
func (p *proc) grepLog(words ...string) int {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		all := true
		for _, w := range words {
			if !bytes.Contains(line, []byte(w)) {
				all = false
				break
			}
		}
		if all {
			n++
		}
	}
	return n
}

// waitReady waits until every process answers ready, or reports who is not.
func waitReady(ctx context.Context, procs []*proc) error {
	for {
		var waiting []string
		for _, p := range procs {
			if ok, why := p.ready(); !ok {
				waiting = append(waiting, p.name+": "+why)
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		sort.Strings(waiting)
		select {
		case <-ctx.Done():
			return errors.New("not ready: " + strings.Join(waiting, "; "))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
