// Command cosbench measures the system: throughput, latency, scale and read-side lag, beside the
// irreducible floor measured in the same run. It writes a Markdown table and a JSON file.
//
//	go run ./cmd/cosbench                 # the full run (about 25 minutes on 2 cores)
//	go run ./cmd/cosbench -quick          # a short smoke run
//	go run ./cmd/cosbench -check          # ours/floor ratios in about 90 s; exit 1 under -min-ratio
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cosnats/cosnats/pkg/bench"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/natsembed"
	"github.com/cosnats/cosnats/pkg/node"
)

func main() {
	if dir := os.Getenv("COSBENCH_NATS_DIR"); dir != "" {
		if size := os.Getenv(envNATSCluster); size != "" {
			os.Exit(serveNATSCluster(dir, size))
		}
		os.Exit(serveNATS(dir))
	}
	if role := os.Getenv(bench.EnvRole); role == bench.RoleFloorFront || role == bench.RoleFloorBack {
		os.Exit(serveFloor())
	}
	if os.Getenv("COSBENCH_WORKER") == "1" {
		os.Exit(serveWorker())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "cosbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	out := flag.String("out", "bench-results", "directory for results.md and results.json")
	o := bench.Options{Concurrency: []int{1, 8, 64, 256}, Replication: true, Log: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }}
	flag.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per measurement")
	flag.DurationVar(&o.Warmup, "warmup", 2*time.Second, "unmeasured warm-up per measurement")
	flag.IntVar(&o.Entities, "entities", 10000, "entities of the many-entities scenarios")
	flag.IntVar(&o.ScaleEntities, "scale", 1000000, "entities of the scale scenario (0 skips it)")
	flag.BoolVar(&o.Replication, "replication", true, "run the sync-always and R3 setups (scenarios 8 and 11)")
	flag.StringVar(&o.NATSURL, "nats", os.Getenv("COS_NATS_URL"), "external NATS for scenarios 1-6 (default: embedded)")
	quick := flag.Bool("quick", false, "short run: 2s per measurement, 20,000 entities at scale")
	conc := flag.String("c", "1,8,64,256", "closed-loop concurrencies of scenario 1")
	only := flag.String("only", "", "comma-separated scenario numbers to run (default all)")
	flag.Float64Var(&o.AssumedMax, "max", 8000, "maximum rate for the open-loop scenarios when scenario 1 is not run")
	setups := flag.String("setups", "", "comma-separated setups of scenario 8 to run: r1-sync, r3, r3-sync (default all)")
	flag.StringVar(&o.Measure, "measure", "both", "what scenarios 1, 4 and 8 measure: both, ours or floor (one alone, e.g. to profile it)")
	flag.Func("env", "extra COS_* setting for the system, KEY=VALUE (repeatable)", func(v string) error {
		o.Env = append(o.Env, v)
		return nil
	})
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	check := flag.Bool("check", false, "live check (about 90 s): ours against the floor at c=64 in each of -check-setups; exits 1 if a ratio is under -min-ratio")
	minRatio := flag.Float64("min-ratio", 0.7, "with -check: the lowest acceptable ratio of ours to the floor")
	checkSetups := flag.String("check-setups", "r1,r3,distributed-r1", "with -check: setups to compare (r1, r3, distributed-r1, distributed-r3)")
	flag.Parse()
	if *check {
		return runCheck(ctx, checkConfig{minRatio: *minRatio, setups: strings.Split(*checkSetups, ","), env: o.Env, entities: o.Entities, out: *out})
	}
	o.Concurrency = nil
	for _, c := range strings.Split(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			return fmt.Errorf("-c: %q is not a concurrency", c)
		}
		o.Concurrency = append(o.Concurrency, n)
	}
	switch o.Measure {
	case "both", "ours", "floor":
	default:
		return fmt.Errorf("-measure: %q is not both, ours or floor", o.Measure)
	}
	if *setups != "" {
		o.Setups = strings.Split(*setups, ",")
	}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	if addr := os.Getenv("COSBENCH_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }() // net/http/pprof: a heap profile during a run
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *quick {
		o.Duration, o.Warmup, o.ScaleEntities = 2*time.Second, 500*time.Millisecond, 20000
	}
	tmp, err := os.MkdirTemp("", "cosbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	o.Dir = tmp
	o.ChildNATS, o.ChildWorker = childNATS, childWorker
	o.Children = selfChildren{}
	report, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	report.Command = "go run ./cmd/cosbench " + strings.Join(os.Args[1:], " ")
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for name, write := range map[string]func(*os.File) error{
		"results.md":   func(f *os.File) error { return report.WriteMarkdown(f) },
		"results.json": func(f *os.File) error { return report.WriteJSON(f) },
	} {
		f, err := os.Create(filepath.Join(*out, name))
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "wrote %s/results.md and results.json\n", *out)
	return nil
}

// childNATS starts this binary again as a bare nats-server (so its memory can be read apart from ours).
func childNATS(dir string) (string, int, func(), error) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "COSBENCH_NATS_DIR="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return "", 0, nil, fmt.Errorf("child nats-server: %w", err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid, stop, nil
}

// childWorker starts this binary again as a worker configured by env (so its memory can be read apart),
// and returns once it takes commands.
func childWorker(env []string) (int, func(), error) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), env...), "COSBENCH_WORKER=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	stop := func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }
	if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
		stop()
		return 0, nil, fmt.Errorf("child worker: %w", err)
	}
	return cmd.Process.Pid, stop, nil
}

// serveWorker is the child: a worker from the environment, until SIGTERM; it prints a line once ready.
func serveWorker() int {
	cfg, log, err := config.Load(os.Environ(), os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	if addr := os.Getenv("COSBENCH_WORKER_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }() // net/http/pprof, to profile the worker apart
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = node.Run(ctx, cfg, node.Options{Roles: node.Roles{Worker: true}, Logger: log, Ready: func(node.Info) { fmt.Println("ready") }})
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}

// serveNATS is the child: a nats-server with JetStream on a loopback port, until SIGTERM.
func serveNATS(dir string) int {
	srv, err := natsembed.Start(natsembed.Config{StoreDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats-server:", err)
		return 1
	}
	return announceUntilSignal(srv.ClientURL(), srv.Shutdown)
}

// announceUntilSignal prints the child's client URL(s) for its parent, then serves until SIGTERM.
func announceUntilSignal(url string, shutdown func()) int {
	fmt.Println(url)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	shutdown()
	return 0
}
