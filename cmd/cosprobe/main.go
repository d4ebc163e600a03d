// Command cosprobe checks the health of a chief-of-state process from inside its container, which has
// no shell, curl or grpc_health_probe: Docker and Compose health checks run it as an exec probe.
//
//	cosprobe http http://127.0.0.1:9102/readyz        # healthy on any 2xx answer
//	cosprobe grpc 127.0.0.1:9000                      # grpc.health.v1 Check of the server ("")
//	cosprobe -timeout 5s grpc 127.0.0.1:50051 chief_of_state.v1.WriteSideHandlerService
//
// It exits 0 when healthy, 1 when not (the reason on stderr, which Docker keeps with the health
// status) and 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const usageText = `usage: cosprobe [-timeout d] http <url>
       cosprobe [-timeout d] grpc <host:port> [service]
`

// errUsage marks an error in the command line (exit code 2, with the usage text).
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr))
}

// run probes what args name and returns the exit code.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	err := probe(ctx, args)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "cosprobe: %v\n%s", err, usageText)
		return 2
	default:
		fmt.Fprintf(stderr, "cosprobe: %v\n", err)
		return 1
	}
}

func probe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cosprobe", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	timeout := fs.Duration("timeout", 2*time.Second, "deadline of the whole probe")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *timeout <= 0 {
		return fmt.Errorf("%w: -timeout must be positive, got %v", errUsage, *timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	switch a := fs.Args(); {
	case len(a) == 2 && a[0] == "http":
		return probeHTTP(ctx, a[1])
	case len(a) == 2 && a[0] == "grpc":
		return probeGRPC(ctx, a[1], "")
	case len(a) == 3 && a[0] == "grpc":
		return probeGRPC(ctx, a[1], a[2])
	default:
		return fmt.Errorf("%w: want http <url> or grpc <host:port> [service], got %q", errUsage, a)
	}
}

// probeHTTP succeeds on a 2xx answer to GET url.
func probeHTTP(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	// No proxy from the environment: the probe targets the container itself.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	// The body of a failing readiness probe says what the process waits for: keep a little of it.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return nil
}

// probeGRPC succeeds when the server's grpc.health.v1.Health reports service as SERVING.
func probeGRPC(ctx context.Context, addr, service string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("%w: gRPC target %q: %v", errUsage, addr, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return fmt.Errorf("health check of %q at %s: %w", service, addr, err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health check of %q at %s: %s", service, addr, s)
	}
	return nil
}
