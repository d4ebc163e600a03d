package natsperm_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/internal/loopport"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/natsperm"
	"github.com/cosnats/cosnats/pkg/node"
)

var update = flag.Bool("update", false, "rewrite the generated permission files")

// The shipped configuration files are exactly what the Go lists generate.
func TestGeneratedFiles(t *testing.T) {
	for path, want := range map[string]string{
		"../../deploy/nats/permissions.conf":                    natsperm.ExampleConf(),
		"../../deploy/helm/cosnats/files/nats-permissions.conf": natsperm.ChartConf(),
	} {
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (generate it: go test ./pkg/natsperm -run TestGeneratedFiles -update)", err)
		}
		if string(got) != want {
			t.Errorf("%s differs from pkg/natsperm: run go test ./pkg/natsperm -run TestGeneratedFiles -update", path)
		}
	}
	// The shipped example loads in nats-server.
	for _, r := range natsperm.Roles {
		t.Setenv(natsperm.PasswordEnv(r), password(r))
	}
	dir := t.TempDir()
	example, err := os.ReadFile("../../deploy/nats/permissions.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "permissions.conf"), example, 0o600); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(main, []byte("jetstream {}\ninclude permissions.conf\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(main)
	if err != nil {
		t.Fatalf("deploy/nats/permissions.conf: %v", err)
	}
	if len(opts.Users) != len(natsperm.Roles) || opts.Users[0].Password != password(natsperm.Roles[0]) || opts.Users[0].Permissions.Response == nil {
		t.Fatalf("deploy/nats/permissions.conf: users %+v", opts.Users)
	}
}

// Another prefix gets its own names, and nothing of the default layout.
func TestOtherPrefix(t *testing.T) {
	l, err := layout.New("ACME")
	if err != nil {
		t.Fatal(err)
	}
	conf := natsperm.Conf(l)
	for _, want := range []string{`"acme.events.*.*"`, `"$JS.API.STREAM.PURGE.ACME_EVENTS"`, `"$KV.ACME_STATE.>"`, `"acme.intake"`} {
		if !strings.Contains(conf, want) {
			t.Errorf("the configuration for ACME lacks %s", want)
		}
	}
	if strings.Contains(conf, `"cos.`) || strings.Contains(conf, ".COS_") || strings.Contains(conf, "KV_COS") {
		t.Errorf("the configuration for ACME names the default layout:\n%s", conf)
	}
}

// violations records the permission violations nats-server logs.
type violations struct {
	mu    sync.Mutex
	lines []string
	seen  []string
}

func (v *violations) Errorf(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	if strings.Contains(s, "Violation") {
		v.mu.Lock()
		v.lines = append(v.lines, s)
		v.mu.Unlock()
	}
}
func (v *violations) Noticef(string, ...any) {}
func (v *violations) Warnf(string, ...any)   {}
func (v *violations) Fatalf(string, ...any)  {}
func (v *violations) Debugf(string, ...any)  {}

// Tracef, with DISCOVER=1 in the environment (users without permissions, server tracing on), records
// every subject each user publishes and subscribes to: how the lists of pkg/natsperm were found.
// `DISCOVER=1 go test -v -run 'TestRolesDoTheirJob$' ./pkg/natsperm` prints them.
func (v *violations) Tracef(format string, a ...any) {
	if os.Getenv("DISCOVER") == "" {
		return
	}
	s := fmt.Sprintf(format, a...)
	i := strings.Index(s, "COS/user:")
	j := strings.Index(s, "<<- [")
	if i < 0 || j < 0 {
		return
	}
	user := strings.SplitN(s[i+9:], "\"", 2)[0]
	f := strings.Fields(s[j+5:])
	if len(f) < 2 || (f[0] != "PUB" && f[0] != "HPUB" && f[0] != "SUB") {
		return
	}
	v.mu.Lock()
	v.seen = append(v.seen, user+" "+f[0]+" "+f[1])
	v.mu.Unlock()
}

func (v *violations) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.lines...)
}

// servers are nats-servers loaded from the generated configuration (the users and permissions of
// natsperm.Conf, passwords from the environment), on loopback.
type servers struct {
	srvs []*server.Server
	log  *violations
	lay  layout.Layout
}

func password(r natsperm.Role) string { return "secret-" + string(r) }

// startServers starts n clustered servers (one: standalone) whose users come from natsperm.Conf.
func startServers(t *testing.T, n int) *servers {
	t.Helper()
	lay := layout.Default()
	for _, r := range natsperm.Roles {
		t.Setenv(natsperm.PasswordEnv(r), password(r))
	}
	s := &servers{log: &violations{}, lay: lay}
	t.Cleanup(func() {
		if t.Failed() {
			for _, v := range s.log.all() {
				t.Log("nats-server:", v)
			}
		}
	})
	dir := t.TempDir()
	pconf := natsperm.Conf(lay)
	if os.Getenv("DISCOVER") != "" {
		pconf = "accounts { COS { jetstream: enabled, users: [ {user: cos-gateway, password: $COS_GATEWAY_PASSWORD}, {user: cos-worker, password: $COS_WORKER_PASSWORD}, {user: cos-projector, password: $COS_PROJECTOR_PASSWORD}, {user: cos-producer, password: $COS_PRODUCER_PASSWORD}, {user: cos-admin, password: $COS_ADMIN_PASSWORD} ] } }\n"
		t.Cleanup(func() {
			seen := map[string]bool{}
			for _, l := range s.log.seen {
				if !seen[l] {
					seen[l] = true
					fmt.Println("SEEN", l)
				}
			}
		})
	}
	if err := os.WriteFile(filepath.Join(dir, "permissions.conf"), []byte(pconf), 0o600); err != nil {
		t.Fatal(err)
	}
	// Route ports known before any server starts, so every server lists all of them. Not from the
	// ephemeral range: there a port closed here could be taken by another test's server or connection,
	// and a foreign cluster's route would knock on ours.
	routePorts, err := loopport.Pick(n)
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for i := range routePorts {
		routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i])))
	}
	for i := range n {
		conf := fmt.Sprintf("server_name: perm-%d\nhost: 127.0.0.1\nport: -1\njetstream { store_dir: %q }\ninclude permissions.conf\n",
			i, filepath.Join(dir, fmt.Sprintf("store-%d", i)))
		if n > 1 {
			conf += fmt.Sprintf("cluster { name: perm, host: 127.0.0.1, port: %d, routes: [%s] }\n", routePorts[i], strings.Join(routes, ", "))
		}
		path := filepath.Join(dir, fmt.Sprintf("nats-%d.conf", i))
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("load the generated configuration: %v", err)
		}
		opts.NoSigs = true
		if os.Getenv("DISCOVER") != "" {
			opts.Trace = true
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		srv.SetLoggerV2(s.log, false, os.Getenv("DISCOVER") != "", false)
		go srv.Start()
		t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		s.srvs = append(s.srvs, srv)
	}
	for _, srv := range s.srvs {
		if !srv.ReadyForConnections(30 * time.Second) {
			t.Fatal("nats-server not ready")
		}
	}
	if n > 1 {
		costest.Eventually(t, 30*time.Second, "JetStream cluster ready", func() bool {
			for _, srv := range s.srvs {
				if !srv.JetStreamIsCurrent() || srv.NumRoutes() < n-1 {
					return false
				}
			}
			return s.srvs[0].JetStreamIsLeader() || s.srvs[1].JetStreamIsLeader() || s.srvs[2].JetStreamIsLeader()
		})
	}
	return s
}

// url is the URL of server i for a role's user.
func (s *servers) url(i int, r natsperm.Role) string {
	u, err := url.Parse(s.srvs[i].ClientURL())
	if err != nil {
		panic(err)
	}
	u.User = url.UserPassword(natsperm.User(r), password(r))
	return u.String()
}

// client connects as role r to server 0; refused receives the permission errors of the connection.
func (s *servers) connect(t *testing.T, r natsperm.Role) (*nats.Conn, jetstream.JetStream, <-chan error) {
	t.Helper()
	errs := make(chan error, 64)
	nc, err := nats.Connect(s.url(0, r), nats.Name("test-"+string(r)), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatalf("connect as %s: %v", r, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, errs
}

// noViolations fails the test when a role was refused anything while doing its job.
func (s *servers) noViolations(t *testing.T) {
	t.Helper()
	if v := s.log.all(); len(v) > 0 {
		t.Fatalf("nats-server refused a role doing its job:\n%s", strings.Join(v, "\n"))
	}
}

// system is a gateway, a worker and a projector, each with its own user (and, on a cluster, on its own
// server), and the handlers they call.
type system struct {
	*servers
	cfg       config.Config
	handler   *costest.Counter
	rec       *costest.Recorder
	gw        *costest.Node
	worker    *costest.Node
	projector *costest.Node
	client    cospb.ChiefOfStateServiceClient
	manager   cospb.ReadSideManagerServiceClient
	numShards int
}

func startSystem(t *testing.T, nodes int) *system {
	t.Helper()
	s := &system{servers: startServers(t, nodes), handler: &costest.Counter{}, rec: costest.NewRecorder()}
	cfg := costest.Config(t, s.url(0, natsperm.Gateway), costest.ServeGRPC(t, s.handler.Register))
	cfg.NATS.Replicas = nodes
	cfg.ReadSideEnabled = true
	cfg.ReadSides = []config.ReadSide{{ID: "rs", Host: "127.0.0.1", Port: costest.ServeGRPC(t, s.rec.Register),
		AutoStart: true, Enabled: true, Timeout: time.Minute, MaxInFlight: 8}}
	s.cfg, s.numShards = cfg, cfg.NumShards
	on := func(r natsperm.Role, i int) config.Config {
		c := cfg
		c.NATS.URL = s.url(i%nodes, r)
		return c
	}
	s.gw = costest.StartNode(t, on(natsperm.Gateway, 0), node.Roles{Gateway: true})
	s.worker = costest.StartNode(t, on(natsperm.Worker, 1), node.Roles{Worker: true})
	s.projector = costest.StartNode(t, on(natsperm.Projector, 2), node.Roles{Projector: true})
	conn := costest.Conn(t, s.gw.GRPCAddr)
	s.client, s.manager = cospb.NewChiefOfStateServiceClient(conn), cospb.NewReadSideManagerServiceClient(conn)
	return s
}

func (s *system) send(t *testing.T, id, cmd string) *cospb.ProcessCommandResponse {
	t.Helper()
	var resp *cospb.ProcessCommandResponse
	// On a cluster the worker's subscription reaches the gateway's server over a route: until then a
	// command gets no responders (UNAVAILABLE), so the first one is retried.
	costest.Eventually(t, 20*time.Second, "a command through the gateway", func() bool {
		var err error
		resp, err = s.client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: id, Command: costest.Cmd(cmd)})
		return err == nil
	})
	return resp
}

// The restricted users can do everything their roles do: commands, GetState (read barrier and direct
// get), read-side delivery, the read-side manager, live subscriptions and both NATS intakes.
func TestRolesDoTheirJob(t *testing.T) {
	s := startSystem(t, 1)
	s.job(t)
}

// The same on a 3-node cluster with 3 replicas, every role on its own server.
func TestRolesDoTheirJobReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster")
	}
	s := startSystem(t, 3)
	s.job(t)
}

func (s *system) job(t *testing.T) {
	ctx := context.Background()
	// A live subscription to everything, opened before the first command.
	live, err := s.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{FromSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	resp := s.send(t, "perm-1", "add:1")
	if resp.GetMeta().GetRevisionNumber() != 1 {
		t.Fatalf("ProcessCommand: revision %d", resp.GetMeta().GetRevisionNumber())
	}
	got, err := s.client.GetState(ctx, &cospb.GetStateRequest{EntityId: "perm-1"})
	if err != nil || got.GetMeta().GetRevisionNumber() != 1 {
		t.Fatalf("GetState: %v %v", got, err)
	}
	// The gateway hears the worker's heartbeats and sends commands to its own subject.
	probe := 0
	costest.Eventually(t, 20*time.Second, "a command routed to the worker's own subject", func() bool {
		probe++
		s.send(t, fmt.Sprintf("probe-%d", probe), "add:1")
		return s.worker.Worker.Stats().Routed > 0
	})
	ev, err := live.Recv()
	if err != nil || ev.GetMeta().GetEntityId() != "perm-1" || ev.GetMeta().GetRevisionNumber() != 1 {
		t.Fatalf("SubscribeAll: %v %v", ev, err)
	}
	s.rec.WaitFor(t, 20*time.Second, "the read side receives perm-1@1", func(r *costest.Recorder) bool { return len(r.Received("perm-1")) >= 1 })

	// The read-side manager.
	key, err := entity.NewKey("perm-1", s.numShards)
	if err != nil {
		t.Fatal(err)
	}
	shard := uint64(key.Shard)
	if _, err := s.manager.PauseReadSide(ctx, &cospb.PauseReadSideRequest{ReadSideId: "rs"}); err != nil {
		t.Fatalf("PauseReadSide: %v", err)
	}
	if _, err := s.manager.ResumeReadSide(ctx, &cospb.ResumeReadSideRequest{ReadSideId: "rs"}); err != nil {
		t.Fatalf("ResumeReadSide: %v", err)
	}
	if _, err := s.manager.GetLatestOffset(ctx, &cospb.GetLatestOffsetRequest{ReadSideId: "rs"}); err != nil {
		t.Fatalf("GetLatestOffset: %v", err)
	}
	if _, err := s.manager.RestartReadSideByShard(ctx, &cospb.RestartReadSideByShardRequest{ReadSideId: "rs", ClusterShardNumber: shard}); err != nil {
		t.Fatalf("RestartReadSideByShard: %v", err)
	}
	s.rec.WaitFor(t, 20*time.Second, "perm-1@1 delivered again after the restart", func(r *costest.Recorder) bool { return r.Attempts("perm-1", 1) >= 2 })
	if _, err := s.manager.PauseReadSideByShard(ctx, &cospb.PauseReadSideByShardRequest{ReadSideId: "rs", ClusterShardNumber: shard}); err != nil {
		t.Fatalf("PauseReadSideByShard: %v", err)
	}
	if _, err := s.manager.SkipOffsetByShard(ctx, &cospb.SkipOffsetByShardRequest{ReadSideId: "rs", ClusterShardNumber: shard}); err != nil {
		t.Fatalf("SkipOffsetByShard: %v", err)
	}
	if _, err := s.manager.ResumeReadSideByShard(ctx, &cospb.ResumeReadSideByShardRequest{ReadSideId: "rs", ClusterShardNumber: shard}); err != nil {
		t.Fatalf("ResumeReadSideByShard: %v", err)
	}
	s.send(t, "perm-1", "add:1")
	s.rec.WaitFor(t, 20*time.Second, "the read side receives perm-1@2", func(r *costest.Recorder) bool {
		for _, rev := range r.Received("perm-1") {
			if rev == 2 {
				return true
			}
		}
		return false
	})

	// A producer: synchronous and asynchronous intake, outcomes heard and read back.
	nc, js, _ := s.connect(t, natsperm.Producer)
	payload, err := proto.Marshal(wrapperspb.String("add:5"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := func(subject, id string) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Data = payload
		m.Header.Set("Cos-Entity-Id", "perm-2")
		m.Header.Set("Cos-Command-Type", "google.protobuf.StringValue")
		m.Header.Set("Cos-Command-Id", id)
		return m
	}
	var reply *nats.Msg
	costest.Eventually(t, 20*time.Second, "an answer on "+s.lay.ProcessSubject(), func() bool {
		reply, err = nc.RequestMsg(cmd(s.lay.ProcessSubject(), "sync-1"), 10*time.Second)
		return err == nil
	})
	if st := reply.Header.Get("Cos-Status"); st != "0" || reply.Header.Get("Cos-Revision") != "1" {
		t.Fatalf("cos.process: status %q (%s), revision %q", st, reply.Header.Get("Cos-Status-Message"), reply.Header.Get("Cos-Revision"))
	}
	outcomes, err := nc.SubscribeSync(s.lay.OutcomeSubject("async-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	m := cmd(s.lay.IntakeSubject(), "async-1")
	m.Header.Set("Nats-Msg-Id", "async-1")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("publish to the intake: %v", err)
	}
	heard, err := outcomes.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("outcome of the intake command: %v", err)
	}
	if heard.Header.Get("Cos-Status") != "0" || heard.Header.Get("Cos-Revision") != "2" {
		t.Fatalf("outcome: status %q (%s), revision %q", heard.Header.Get("Cos-Status"), heard.Header.Get("Cos-Status-Message"), heard.Header.Get("Cos-Revision"))
	}
	st, err := js.Stream(ctx, s.lay.OutcomeStream())
	if err != nil {
		t.Fatalf("outcome stream info: %v", err)
	}
	stored, err := st.GetLastMsgForSubject(ctx, s.lay.OutcomeLogSubject("async-1"))
	if err != nil || stored.Header.Get("Cos-Status") != "0" {
		t.Fatalf("read the stored outcome: %v %v", stored, err)
	}
	// A second live subscriber, through the gateway, still works and unsubscribing works.
	live2, err := s.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{SubscriptionId: "perm-live", FromSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := live2.Recv(); err != nil || ev.GetSequence() == 0 {
		t.Fatalf("SubscribeAll from 1: %v %v", ev, err)
	}
	if _, err := s.client.UnsubscribeAll(ctx, &cospb.UnsubscribeAllRequest{SubscriptionId: "perm-live"}); err != nil {
		t.Fatalf("UnsubscribeAll: %v", err)
	}

	// The manager when the projector holding a shard does not answer: it unpins the shard itself.
	if err := s.projector.Stop(); err != nil {
		t.Fatalf("stop the projector: %v", err)
	}
	_, ajs, _ := s.connect(t, natsperm.Admin)
	info, err := ajs.Consumer(ctx, s.lay.EventStream(), s.lay.ReadSideConsumer("rs", int(shard)))
	if err != nil {
		t.Fatal(err)
	}
	if !pinned(info.CachedInfo()) {
		t.Fatalf("the stopped projector's pin on shard %d is gone already: this test needs it", shard)
	}
	if _, err := s.manager.PauseReadSideByShard(ctx, &cospb.PauseReadSideByShardRequest{ReadSideId: "rs", ClusterShardNumber: shard}); err != nil {
		t.Fatalf("PauseReadSideByShard with the projector gone: %v", err)
	}
	s.noViolations(t)
}

// pinned says whether the server pinned the consumer to a client.
func pinned(info *jetstream.ConsumerInfo) bool {
	for _, g := range info.PriorityGroups {
		if g.PinnedClientID != "" {
			return true
		}
	}
	return false
}

// What the roles must not do is refused by nats-server, and nothing of it reaches the streams.
func TestRolesAreRefused(t *testing.T) {
	s := startSystem(t, 1)
	s.send(t, "perm-1", "add:1")
	s.rec.WaitFor(t, 20*time.Second, "the read side receives perm-1@1", func(r *costest.Recorder) bool { return len(r.Received("perm-1")) >= 1 })
	s.noViolations(t)

	_, admin, _ := s.connect(t, natsperm.Admin)
	ctx := context.Background()
	events, err := admin.Stream(ctx, s.lay.EventStream())
	if err != nil {
		t.Fatal(err)
	}
	msgs := events.CachedInfo().State.Msgs
	key, _ := entity.NewKey("forged", s.numShards)
	forged := s.lay.EventSubject(key)
	rsConsumer := s.lay.ReadSideConsumer("rs", key.Shard)
	api := "$JS.API."
	cases := []struct {
		role    natsperm.Role
		subject string
	}{
		{natsperm.Producer, forged},
		{natsperm.Producer, "cos.events.1.x"},
		{natsperm.Gateway, forged},
		{natsperm.Gateway, "cos.events.1.x"},
		{natsperm.Projector, forged},
		{natsperm.Worker, s.lay.SyncSubject()},
		{natsperm.Producer, s.lay.SyncSubject()},
		{natsperm.Producer, s.lay.CommandSubject(key)},
		{natsperm.Producer, s.lay.WorkerCommandSubject("w-1", s.lay.CommandSubject(key))},
		{natsperm.Producer, s.lay.WorkerHeartbeatSubject("w-1")},
		{natsperm.Projector, s.lay.WorkerHeartbeatSubject("w-1")},
		{natsperm.Gateway, s.lay.WorkerHeartbeatSubject("w-1")},
		{natsperm.Producer, s.lay.OutcomeLogSubject("x")},
		{natsperm.Worker, s.lay.OutcomeLogSubject("x")},
		{natsperm.Producer, api + "CONSUMER.DELETE." + s.lay.EventStream() + "." + rsConsumer},
		{natsperm.Worker, api + "CONSUMER.DELETE." + s.lay.EventStream() + "." + rsConsumer},
		{natsperm.Producer, api + "CONSUMER.DELETE." + s.lay.IntakeStream() + "." + s.lay.IntakeConsumer()},
		{natsperm.Gateway, api + "CONSUMER.DELETE." + s.lay.IntakeStream() + "." + s.lay.IntakeConsumer()},
		{natsperm.Producer, api + "STREAM.PURGE." + s.lay.IntakeStream()},
		{natsperm.Gateway, api + "STREAM.PURGE." + s.lay.IntakeStream()},
		{natsperm.Gateway, api + "STREAM.PURGE." + s.lay.OutcomeStream()},
		{natsperm.Gateway, api + "STREAM.DELETE." + s.lay.OutcomeStream()},
		{natsperm.Producer, api + "STREAM.DELETE." + s.lay.IntakeStream()},
		{natsperm.Producer, api + "STREAM.INFO." + s.lay.EventStream()},
		{natsperm.Producer, api + "DIRECT.GET." + s.lay.EventStream()},
	}
	for _, r := range []natsperm.Role{natsperm.Gateway, natsperm.Worker, natsperm.Projector, natsperm.Producer, natsperm.Admin} {
		for _, op := range []string{"STREAM.DELETE.", "STREAM.PURGE.", "STREAM.MSG.DELETE."} {
			cases = append(cases, struct {
				role    natsperm.Role
				subject string
			}{r, api + op + s.lay.EventStream()})
		}
		if r != natsperm.Admin {
			cases = append(cases, struct {
				role    natsperm.Role
				subject string
			}{r, api + "STREAM.UPDATE." + s.lay.EventStream()})
		}
	}
	conns := map[natsperm.Role]struct {
		nc   *nats.Conn
		errs <-chan error
	}{}
	for _, r := range natsperm.Roles {
		nc, _, errs := s.connect(t, r)
		conns[r] = struct {
			nc   *nats.Conn
			errs <-chan error
		}{nc, errs}
	}
	for _, tc := range cases {
		c := conns[tc.role]
		// A request, as the JetStream API takes it: refused before anything sees it.
		if err := c.nc.PublishRequest(tc.subject, c.nc.NewInbox(), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, c.errs, tc.role, tc.subject)
	}
	// Subscriptions a producer must not hold: taking commands or reading events.
	for _, subject := range []string{s.lay.CommandSubjects(), s.lay.AllWorkerCommandSubjects(), s.lay.EventSubjects(), s.lay.OutcomeLogSubjects()} {
		c := conns[natsperm.Producer]
		if _, err := c.nc.QueueSubscribeSync(subject, s.lay.WorkerQueue()); err != nil {
			t.Fatal(err)
		}
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, c.errs, natsperm.Producer, subject)
	}

	// Nothing landed: the event stream and the read side's consumer are as they were.
	if _, err := events.GetLastMsgForSubject(ctx, forged); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("a forged event is in %s: %v", s.lay.EventStream(), err)
	}
	if _, err := events.GetLastMsgForSubject(ctx, "cos.events.1.x"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("a forged event is in %s: %v", s.lay.EventStream(), err)
	}
	info, err := events.Info(ctx)
	if err != nil || info.State.Msgs < msgs {
		t.Fatalf("event stream after the refusals: %v %v (had %d messages)", info, err, msgs)
	}
	if _, err := admin.Consumer(ctx, s.lay.EventStream(), rsConsumer); err != nil {
		t.Errorf("read-side consumer after the refusals: %v", err)
	}
	// The system still works.
	if resp := s.send(t, "perm-1", "add:1"); resp.GetMeta().GetRevisionNumber() != 2 {
		t.Fatalf("after the refusals: revision %d", resp.GetMeta().GetRevisionNumber())
	}
}

// wantRefused waits for the server's permission error for subject on a connection of role.
func wantRefused(t *testing.T, errs <-chan error, role natsperm.Role, subject string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), fmt.Sprintf("%q", subject)) {
				return
			}
		case <-timeout:
			t.Errorf("%s: no permission violation for %s", role, subject)
			return
		}
	}
}
