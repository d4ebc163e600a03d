package composetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// services are every service of docker-compose.yml that the test starts (no profile).
var services = []string{
	"nats-1", "nats-2", "nats-3", "bankhandler", "bankreadside",
	"gateway", "worker-1", "worker-2", "projector-1", "projector-2",
}

// stack is one compose project started from the repository's docker-compose.yml.
type stack struct {
	t       *testing.T
	root    string   // repository root
	compose []string // "docker compose" or "docker-compose"
	project string
	files   []string          // compose files after docker-compose.yml, relative to the repository root
	env     []string          // os.Environ plus the images and the gateway's host port
	ids     map[string]string // service → container id
}

// run runs name args in dir with env and returns its combined output; the error carries the command
// and the end of its output.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second // a child that keeps the output open must not hang the test
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.String(), 40))
	}
	return out.String(), nil
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// composeCommand is the Compose CLI this machine has: the docker plugin (v2) if present, else the
// standalone docker-compose (v1 from Debian, or v2).
func composeCommand(ctx context.Context) ([]string, error) {
	if _, err := run(ctx, "", os.Environ(), "docker", "compose", "version"); err == nil {
		return []string{"docker", "compose"}, nil
	}
	if _, err := run(ctx, "", os.Environ(), "docker-compose", "version"); err == nil {
		return []string{"docker-compose"}, nil
	}
	return nil, fmt.Errorf("neither `docker compose` nor `docker-compose` works")
}

// repoRoot is the repository this module lives in (../.. from the package directory go test runs in).
func repoRoot() (string, error) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", fmt.Errorf("repository root: %w", err)
	}
	if _, err := os.Stat(filepath.Join(root, "docker-compose.yml")); err != nil {
		return "", fmt.Errorf("repository root %s: %w", root, err)
	}
	return root, nil
}

// images is the result of the one image build that the tests of this package share.
var images struct {
	once           sync.Once
	cos, nats, err string
}

// sharedImages returns our image and the NATS image: COS_IMAGE and NATS_IMAGE when both are set, else
// the images that the first test to ask builds (buildImages) and every later test reuses. A failed
// build fails every test that asks.
func sharedImages(ctx context.Context, t *testing.T, root string) (image, natsImage string, err error) {
	images.once.Do(func() {
		images.cos, images.nats = os.Getenv("COS_IMAGE"), os.Getenv("NATS_IMAGE")
		if images.cos != "" && images.nats != "" {
			return
		}
		images.cos, images.nats = "cosnats:composetest", "cosnats-nats:composetest"
		if err := buildImages(ctx, t, root, images.cos, images.nats); err != nil {
			images.err = err.Error()
		}
	})
	if images.err != "" {
		return "", "", errors.New(images.err)
	}
	return images.cos, images.nats, nil
}

// buildImages builds the binaries on the host and both images from them, on scratch: the documented
// path (make dist image nats-image) minus the pull of a base image.
func buildImages(ctx context.Context, t *testing.T, root, image, natsImage string) error {
	start := time.Now()
	if _, err := run(ctx, root, os.Environ(), "bash", "scripts/build-dist.sh"); err != nil {
		return fmt.Errorf("build binaries: %w", err)
	}
	env := append(os.Environ(), "BASE=scratch", "IMAGE="+image, "NATS_IMAGE="+natsImage)
	if _, err := run(ctx, root, env, "bash", "scripts/build-images.sh", "all"); err != nil {
		return fmt.Errorf("build images: %w", err)
	}
	t.Logf("built %s and %s in %v", image, natsImage, time.Since(start).Round(time.Second))
	return nil
}

// do runs a compose subcommand on the project: docker-compose.yml, then s.files.
func (s *stack) do(ctx context.Context, args ...string) (string, error) {
	full := append(s.compose[1:len(s.compose):len(s.compose)],
		"-p", s.project, "-f", filepath.Join(s.root, "docker-compose.yml"))
	for _, f := range s.files {
		full = append(full, "-f", filepath.Join(s.root, f))
	}
	return run(ctx, s.root, s.env, s.compose[0], append(full, args...)...)
}

// docker runs a docker subcommand.
func (s *stack) docker(ctx context.Context, args ...string) (string, error) {
	return run(ctx, s.root, s.env, "docker", args...)
}

// up starts the stack and records each service's container.
func (s *stack) up(ctx context.Context) error {
	if _, err := s.do(ctx, "up", "-d"); err != nil {
		return fmt.Errorf("compose up: %w", err)
	}
	s.ids = make(map[string]string)
	for _, svc := range services {
		out, err := s.do(ctx, "ps", "-q", svc)
		if err != nil {
			return fmt.Errorf("container of %s: %w", svc, err)
		}
		id := strings.TrimSpace(out)
		if id == "" || strings.ContainsAny(id, " \n") {
			return fmt.Errorf("container of %s: compose ps -q said %q", svc, out)
		}
		s.ids[svc] = id
	}
	return nil
}

// health is "<status> <health>" of a service's container, e.g. "running healthy" or "exited ".
func (s *stack) health(ctx context.Context, svc string) (string, error) {
	out, err := s.docker(ctx, "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", s.ids[svc])
	if err != nil {
		return "", fmt.Errorf("inspect %s: %w", svc, err)
	}
	return strings.TrimSpace(out), nil
}

// serviceUp reports whether svc is running and, when it has a healthcheck, healthy. A NATS node has
// no healthcheck (the official image and ours share no probe program), so it is up when its
// monitoring /healthz answers 200, which nats-server does once JetStream is current with the cluster.
func (s *stack) serviceUp(ctx context.Context, svc string) (bool, string, error) {
	h, err := s.health(ctx, svc)
	if err != nil {
		return false, "", err
	}
	if !strings.HasPrefix(svc, "nats-") {
		return h == "running healthy", svc + ": " + h, nil
	}
	if h != "running" {
		return false, svc + ": " + h, nil
	}
	if _, err := s.monitor(ctx, svc, "/healthz"); err != nil {
		return false, svc + ": " + err.Error(), nil
	}
	return true, "", nil
}

// monitor GETs path from a NATS node's monitoring port, published by monitoring.yml on a port that
// changes when the container restarts, and returns the body of a 200 answer.
func (s *stack) monitor(ctx context.Context, node, path string) ([]byte, error) {
	out, err := s.do(ctx, "port", node, "8222")
	if err != nil {
		return nil, fmt.Errorf("monitoring port of %s: %w", node, err)
	}
	u := "http://" + strings.TrimSpace(out) + path
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("monitoring of %s: %w", node, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("monitoring of %s: %w", node, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// streamLeader is the node that leads the stream name, as a running node reports it.
func (s *stack) streamLeader(ctx context.Context, name string) (string, error) {
	var errs []error
	for _, node := range []string{"nats-1", "nats-2", "nats-3"} {
		body, err := s.monitor(ctx, node, "/jsz?accounts=true&streams=true")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var jsz struct {
			AccountDetails []struct {
				StreamDetail []struct {
					Name    string
					Cluster struct{ Leader string }
				} `json:"stream_detail"`
			} `json:"account_details"`
		}
		if err := json.Unmarshal(body, &jsz); err != nil {
			return "", fmt.Errorf("/jsz of %s: %w", node, err)
		}
		for _, acc := range jsz.AccountDetails {
			for _, st := range acc.StreamDetail {
				if st.Name == name && st.Cluster.Leader != "" {
					return st.Cluster.Leader, nil
				}
			}
		}
		errs = append(errs, fmt.Errorf("%s knows no leader of %s", node, name))
	}
	return "", fmt.Errorf("leader of stream %s: %w", name, errors.Join(errs...))
}

// waitUp waits until every named service is up.
func (s *stack) waitUp(ctx context.Context, timeout time.Duration, svcs ...string) error {
	return poll(ctx, timeout, time.Second, "services up", func() (bool, string, error) {
		var down []string
		for _, svc := range svcs {
			ok, why, err := s.serviceUp(ctx, svc)
			if err != nil {
				return false, "", err
			}
			if !ok {
				down = append(down, why)
			}
		}
		return len(down) == 0, strings.Join(down, "; "), nil
	})
}

// kill sends SIGKILL to the containers of svcs, as a crash would, and waits until Docker sees them
// stopped.
func (s *stack) kill(ctx context.Context, svcs ...string) error {
	args := []string{"kill"}
	for _, svc := range svcs {
		args = append(args, s.ids[svc])
	}
	if _, err := s.docker(ctx, args...); err != nil {
		return fmt.Errorf("kill %v: %w", svcs, err)
	}
	return poll(ctx, 30*time.Second, 200*time.Millisecond, "killed containers stopped", func() (bool, string, error) {
		for _, svc := range svcs {
			h, err := s.health(ctx, svc)
			if err != nil {
				return false, "", err
			}
			if strings.HasPrefix(h, "running") {
				return false, svc + ": " + h, nil
			}
		}
		return true, "", nil
	})
}

// start starts the (killed) containers of svcs again; a container that its restart policy has
// already restarted is left as it is.
func (s *stack) start(ctx context.Context, svcs ...string) error {
	args := []string{"start"}
	for _, svc := range svcs {
		args = append(args, s.ids[svc])
	}
	if _, err := s.docker(ctx, args...); err != nil {
		return fmt.Errorf("start %v: %w", svcs, err)
	}
	return nil
}

// natsNodeOf is the NATS node svc's process is connected to now, from its log: the url of its last
// "connected to NATS" or "reconnected to NATS" record — a node's name from COS_NATS_URL, or an address
// the cluster advertised (a node container's IP).
func (s *stack) natsNodeOf(ctx context.Context, svc string) (string, error) {
	out, err := s.docker(ctx, "logs", s.ids[svc])
	if err != nil {
		return "", fmt.Errorf("log of %s: %w", svc, err)
	}
	host := ""
	for line := range strings.Lines(out) {
		var rec struct{ Msg, URL string }
		if json.Unmarshal([]byte(line), &rec) != nil || (rec.Msg != "connected to NATS" && rec.Msg != "reconnected to NATS") {
			continue
		}
		u, err := url.Parse(rec.URL)
		if err != nil {
			return "", fmt.Errorf("log of %s: NATS url %q: %w", svc, rec.URL, err)
		}
		host = u.Hostname()
	}
	if host == "" {
		return "", fmt.Errorf("log of %s: no \"connected to NATS\" record", svc)
	}
	for _, node := range []string{"nats-1", "nats-2", "nats-3"} {
		if host == node {
			return node, nil
		}
		ips, err := s.docker(ctx, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", s.ids[node])
		if err != nil {
			return "", fmt.Errorf("address of %s: %w", node, err)
		}
		if slices.Contains(strings.Fields(ips), host) {
			return node, nil
		}
	}
	return "", fmt.Errorf("%s is connected to %s, which is no NATS node", svc, host)
}

// dumpLogs prints the end of every container's log.
func (s *stack) dumpLogs(ctx context.Context) {
	for _, svc := range services {
		out, err := s.do(ctx, "logs", "--no-color", "--timestamps", "--tail", "300", svc)
		if err != nil {
			s.t.Logf("logs of %s: %v", svc, err)
		}
		s.t.Logf("==== logs of %s (last 300 lines) ====\n%s", svc, out)
	}
}

// down removes the containers, the network and the volumes.
func (s *stack) down(ctx context.Context) {
	if out, err := s.do(ctx, "down", "-v", "--remove-orphans", "-t", "10"); err != nil {
		s.t.Errorf("compose down: %v\n%s", err, out)
	}
}

// poll calls cond every interval until it holds, it fails, or timeout (or ctx) ends; then the error
// names what was awaited and the last reason cond gave.
func poll(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, why, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w; last: %s", what, ctx.Err(), why)
		case <-tick.C:
		}
	}
}

// testEnv is what every compose test starts from.
type testEnv struct {
	began            time.Time
	root             string   // the repository
	compose          []string // docker-compose or docker compose
	image, natsImage string
}

// prepare skips under -short, bounds the test by budget (the context ends when the test does), checks
// Docker, and builds the images once for all tests.
func prepare(t *testing.T, budget time.Duration) (context.Context, testEnv) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the compose test builds images and runs ten containers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	t.Cleanup(cancel)
	env := testEnv{began: time.Now()}
	var err error
	if env.root, err = repoRoot(); err != nil {
		t.Fatal(err)
	}
	if _, err := run(ctx, env.root, os.Environ(), "docker", "info"); err != nil {
		t.Fatalf("the compose test needs a running Docker engine: %v", err)
	}
	if env.compose, err = composeCommand(ctx); err != nil {
		t.Fatal(err)
	}
	if env.image, env.natsImage, err = sharedImages(ctx, t, env.root); err != nil {
		t.Fatal(err)
	}
	return ctx, env
}

// bringUp brings the stack up and waits until every service is healthy; when the test ends it takes the
// stack down (after printing every container's log if the test failed).
func (s *stack) bringUp(t *testing.T, ctx context.Context) {
	t.Helper()
	t.Cleanup(func() {
		// Not ctx: it may be what ran out.
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer ccancel()
		if t.Failed() {
			s.dumpLogs(cctx)
		}
		s.down(cctx)
	})
	upStart := time.Now()
	if err := s.up(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.waitUp(ctx, 3*time.Minute, services...); err != nil {
		t.Fatal(err)
	}
	t.Logf("all %d services up in %v", len(services), time.Since(upStart).Round(time.Second))
}
