package charttest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	bankv1 "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	cosnatsv1 "github.com/cosnats/cosnats/gen/cosnats/v1"
)

// TestWiring runs the chart: it renders the example values (deploy/helm/examples/cosnats-values.yaml)
// with NATS and the handlers moved to this host, turns each rendered Deployment into a process of
// the real binary with the command, environment and mounted files its pod would have, starts the
// bank example's handlers from their manifests likewise, and a NATS cluster from the NATS example
// values, with JWT authentication whose credentials reach the processes only through the chart's
// Secret references. Then it runs each pod's probes, sends commands through the gateway, sees the
// events reach the read side, and stops every process with SIGTERM within its grace period.
func TestWiring(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ps := &procs{}
	// Registered after the temporary directory, so it runs before the directory (and the logs in
	// it) is removed: cleanups run last-in, first-out.
	ps.dumpOnFailure(t)
	bin := buildBinaries(t)

	auth := newNATSAuth(t)
	nc := startNATSCluster(t, ps, filepath.Join(bin, "nats-server"), dir, auth, readNATSExample(t))

	// The handlers, from the example manifests, on local ports.
	handlerPort, readSidePort, gatewayPort := freePort(t), freePort(t), freePort(t)
	bank := decodeAll(t, map[string]string{"bank-example.yaml": string(readFile(t, filepath.Join(examplesDir, "bank-example.yaml")))})
	handlerAddr := map[string]string{
		"bank-handler":  "127.0.0.1:" + strconv.Itoa(handlerPort),
		"bank-readside": "127.0.0.1:" + strconv.Itoa(readSidePort),
	}
	var handlers []*podProcess
	for _, d := range find[*appsv1.Deployment](t, bank, 2) {
		addr := handlerAddr[d.Name]
		envName := map[string]string{"bank-handler": "BANK_HANDLER_ADDR", "bank-readside": "BANK_READSIDE_ADDR"}[d.Name]
		port, _ := strconv.Atoi(addr[strings.LastIndex(addr, ":")+1:])
		pp := newPodProcess(t, d, newCluster(bank), adjustments{
			binDir: bin,
			ports:  map[int32]int{d.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort: port},
			env:    map[string]func(string) (string, error){envName: listenAddr(d.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort, port)},
		}, dir)
		handlers = append(handlers, pp)
	}

	// The chart, rendered with the example values and the local addresses. The NATS URL and the
	// credentials come from a Secret, as they would in production.
	vals := readValues(t, []string{filepath.Join(examplesDir, "cosnats-values.yaml")},
		"nats.url=",
		"nats.urlSecret.name=cos-nats", "nats.urlSecret.key=url",
		"nats.credsSecret.name=cos-nats", "nats.credsSecret.key=cos.creds",
		"writeSide.host=127.0.0.1", "writeSide.port="+strconv.Itoa(handlerPort),
		"readSides.bank-balances.host=127.0.0.1", "readSides.bank-balances.port="+strconv.Itoa(readSidePort),
		"gateway.port="+strconv.Itoa(gatewayPort),
	)
	files, err := render(t, loadChart(t), renderOpts{vals: vals})
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, files)
	secret := &corev1.Secret{StringData: map[string]string{"url": strings.Join(nc.clientURLs, ","), "cos.creds": string(auth.userCreds)}}
	secret.Name = "cos-nats"
	cl := newCluster(objs, secret)

	var roles []*podProcess
	byRole := map[string]*podProcess{}
	for _, d := range find[*appsv1.Deployment](t, objs, 3) {
		metricsPort := freePort(t)
		var containerMetrics int32
		for _, cp := range d.Spec.Template.Spec.Containers[0].Ports {
			if cp.Name == "metrics" {
				containerMetrics = cp.ContainerPort
			}
		}
		// Every pod listens on the same metrics port of its own address; here each needs its own.
		pp := newPodProcess(t, d, cl, adjustments{
			binDir: bin,
			ports:  map[int32]int{containerMetrics: metricsPort},
			env:    map[string]func(string) (string, error){"COS_METRICS_ADDRESS": listenAddr(containerMetrics, metricsPort)},
		}, dir)
		roles = append(roles, pp)
		byRole[role(d)] = pp
	}
	if byRole["gateway"] == nil || byRole["worker"] == nil || byRole["projector"] == nil {
		t.Fatalf("want a gateway, a worker and a projector Deployment, got %v", keys(byRole))
	}
	checkRoleEnv(t, byRole, strings.Join(nc.clientURLs, ","))

	// Start everything at once, NATS perhaps not yet ready: the processes wait for it.
	all := append(append([]*podProcess{}, handlers...), roles...)
	running := map[*podProcess]*proc{}
	for _, pp := range all {
		running[pp] = ps.add(startProc(t, pp.name, pp.bin, pp.args, pp.environ(), dir, dir))
	}
	nc.healthy(t, ctx)

	// The pods' own probes decide when they are ready, and must pass while they are.
	for _, pp := range all {
		waitFor(t, ctx, pp.name+" readiness probe", 90*time.Second, func(ctx context.Context) error {
			if !running[pp].running() {
				return fmt.Errorf("%s exited: %v\n%s", pp.name, running[pp].err, running[pp].tail(20))
			}
			return pp.probe(t, ctx, pp.container.ReadinessProbe)
		})
	}
	for _, pp := range all {
		if err := pp.probe(t, ctx, pp.container.LivenessProbe); pp.container.LivenessProbe != nil && err != nil {
			t.Errorf("liveness probe: %v", err)
		}
	}

	// Commands through the gateway's port, as a client behind the Service would send them.
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", gatewayPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cos := cosv1.NewChiefOfStateServiceClient(conn)
	const account = "acc-chart"
	openAndCredit(t, ctx, cos, account, 1000, 250)

	// The events reach the read side: its shard's offset advances to the second event (stream
	// sequence 2) and nothing is pending on any shard.
	waitReadSideCaughtUp(t, ctx, conn, cl, 60*time.Second)
	readSideLogged(t, running, 1250)

	// `helm test`: the chart's test Pod, with the gateway Service's address mapped to the gateway's
	// local port, succeeds against the running gateway.
	runHelmTest(t, ctx, objs, bin, byRole["gateway"])

	// A rollout's SIGTERM: each role drains and exits 0 within its pod's grace period.
	stopAll(t, roles, running)
}

// waitReadSideCaughtUp waits until the bank read side has acknowledged the test's two events: every
// shard reported, none pending, failing or stopped, and the highest offset at stream sequence 2.
func waitReadSideCaughtUp(t *testing.T, ctx context.Context, conn grpc.ClientConnInterface, cl cluster, timeout time.Duration) {
	t.Helper()
	status := cosnatsv1.NewReadSideStatusServiceClient(conn)
	numShards, _ := strconv.Atoi(cl.configMaps["cos-cosnats-layout"].Data["COS_NUM_SHARDS"])
	waitFor(t, ctx, "events acknowledged by the read side", timeout, func(ctx context.Context) error {
		st, err := status.GetReadSideStatus(ctx, &cosnatsv1.GetReadSideStatusRequest{ReadSideId: "bank-balances"})
		if err != nil {
			return err
		}
		if len(st.GetShards()) != numShards {
			return fmt.Errorf("%d shards reported, want %d", len(st.GetShards()), numShards)
		}
		var maxOffset uint64
		for _, s := range st.GetShards() {
			if s.GetPending() != 0 || s.GetFailing() || s.GetStopped() {
				return fmt.Errorf("shard %d: %v", s.GetClusterShardNumber(), s)
			}
			maxOffset = max(maxOffset, s.GetOffset())
		}
		if maxOffset != 2 {
			return fmt.Errorf("highest offset %d, want 2", maxOffset)
		}
		return nil
	})
}

// readSideLogged checks that the bank read side process logged the event that gave the balance.
func readSideLogged(t *testing.T, running map[*podProcess]*proc, balance int) {
	t.Helper()
	for pp, p := range running {
		if pp.name == "bank-readside" && (!p.logContains("readside: event applied") || !p.logContains(fmt.Sprintf("balance=%d", balance))) {
			t.Errorf("the read side did not log the event giving balance %d:\n%s", balance, p.tail(20))
		}
	}
}

// stopAll sends each role SIGTERM at once and checks that it drains and exits 0 within its grace period.
func stopAll(t *testing.T, roles []*podProcess, running map[*podProcess]*proc) {
	t.Helper()
	var wg sync.WaitGroup
	for _, pp := range roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, err := running[pp].stop(pp.grace)
			if err != nil {
				t.Error(err)
				return
			}
			t.Logf("%s stopped %s after SIGTERM (grace %s)", pp.name, took.Round(time.Millisecond), pp.grace)
		}()
	}
	wg.Wait()
}

// listenAddr rewrites a rendered listen address "host:containerPort" to 127.0.0.1:local, after
// checking that the rendered port is the container port the pod declares (and its probes use).
func listenAddr(containerPort int32, local int) func(string) (string, error) {
	return func(v string) (string, error) {
		_, port, err := net.SplitHostPort(v)
		if err != nil {
			return "", err
		}
		if port != strconv.Itoa(int(containerPort)) {
			return "", fmt.Errorf("listens on port %s, but the container declares %d", port, containerPort)
		}
		return "127.0.0.1:" + strconv.Itoa(local), nil
	}
}

// checkRoleEnv checks what each role's process receives before it starts: the NATS URL and
// credentials from the Secret, the read-side folder for projectors only.
func checkRoleEnv(t *testing.T, byRole map[string]*podProcess, natsURL string) {
	t.Helper()
	for r, pp := range byRole {
		if pp.env["COS_NATS_URL"] != natsURL {
			t.Errorf("%s: COS_NATS_URL=%q, want the Secret's %q", r, pp.env["COS_NATS_URL"], natsURL)
		}
		if creds := pp.env["COS_NATS_CREDS"]; !strings.HasPrefix(creds, pp.mounts["/etc/cos/nats-creds"]+"/") {
			t.Errorf("%s: COS_NATS_CREDS=%q is not in the mounted Secret", r, creds)
		}
		if pp.env["COS_NATS_REPLICAS"] != "3" {
			t.Errorf("%s: COS_NATS_REPLICAS=%q, want 3 as the example sets", r, pp.env["COS_NATS_REPLICAS"])
		}
	}
	if got := byRole["projector"].env["COS_READ_SIDE_CONFIG"]; got != byRole["projector"].mounts["/etc/cos/readsides"] {
		t.Errorf("projector: COS_READ_SIDE_CONFIG=%q, want the mounted read-side folder", got)
	}
}

// runHelmTest runs the command of the chart's test hook Pod. Its only argument naming a Service
// address, <service>.<namespace>.svc:<port>, becomes the local address of that port's target in the
// gateway process.
func runHelmTest(t *testing.T, ctx context.Context, objs []object, bin string, gateway *podProcess) {
	t.Helper()
	pods := find[*corev1.Pod](t, objs, 1)
	pod := pods[0]
	if pod.Annotations["helm.sh/hook"] != "test" || len(pod.Spec.Containers) != 1 {
		t.Fatalf("the test Pod %s is not a single-container helm test hook: %v", pod.Name, pod.Annotations)
	}
	services := map[string]*corev1.Service{}
	for _, s := range find[*corev1.Service](t, objs, -1) {
		services[s.Name+"."+s.Namespace+".svc"] = s
	}
	c := pod.Spec.Containers[0]
	if len(c.Command) != 1 || filepath.Dir(c.Command[0]) != "/usr/local/bin" {
		t.Fatalf("test Pod command %q is not one of the image's binaries", c.Command)
	}
	args := append([]string{}, c.Args...)
	mapped := false
	for i, a := range args {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		svc, ok := services[host]
		if !ok {
			t.Fatalf("test Pod argument %s names no rendered Service", a)
		}
		for _, sp := range svc.Spec.Ports {
			if strconv.Itoa(int(sp.Port)) == port {
				args[i] = "127.0.0.1:" + strconv.Itoa(gateway.localPort(t, sp.TargetPort))
				mapped = true
			}
		}
	}
	if !mapped {
		t.Fatalf("test Pod arguments %q name no port of a rendered Service", c.Args)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, filepath.Join(bin, filepath.Base(c.Command[0])), args...)
	cmd.Env = []string{"PATH=" + imageEnv["PATH"]}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("helm test Pod %s (%s %q): %v\n%s", pod.Name, c.Command[0], args, err, out)
		return
	}
	t.Logf("helm test Pod %s passed: %s %q", pod.Name, c.Command[0], args)
}

// openAndCredit opens a bank account with initial, credits it by amount, and checks the reply: revision
// 2 and the sum as balance.
func openAndCredit(t *testing.T, ctx context.Context, cos cosv1.ChiefOfStateServiceClient, account string, initial, amount int64) {
	t.Helper()
	send := func(cmd *anypb.Any) *cosv1.ProcessCommandResponse {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		resp, err := cos.ProcessCommand(cctx, &cosv1.ProcessCommandRequest{EntityId: account, Command: cmd})
		if err != nil {
			t.Fatalf("ProcessCommand: %v", err)
		}
		return resp
	}
	open, _ := anypb.New(&bankv1.OpenAccount{Owner: "alice", InitialBalance: initial})
	credit, _ := anypb.New(&bankv1.Credit{Amount: amount})
	send(open)
	resp := send(credit)
	var acc bankv1.BankAccount
	if err := resp.GetState().UnmarshalTo(&acc); err != nil {
		t.Fatal(err)
	}
	if resp.GetMeta().GetRevisionNumber() != 2 || acc.GetBalance() != initial+amount {
		t.Fatalf("after open %d and credit %d: revision %d, balance %d; want 2, %d", initial, amount,
			resp.GetMeta().GetRevisionNumber(), acc.GetBalance(), initial+amount)
	}
}
