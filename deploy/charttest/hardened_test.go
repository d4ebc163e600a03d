package charttest

import (
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/cosnats/cosnats/pkg/natsperm"
)

// TestHardened: ci/hardened-values.yaml turns into the environment and files of SECURITY.md's hardened
// deployment. Each Deployment is resolved as the kubelet would (newPodProcess, as in the wiring test)
// against Secrets of the names the values give, and every *_FILE variable must point into a read-only
// Secret volume (not a subPath, so a renewed Secret reaches the file) holding that Secret's key.
// It does not start the binaries against a TLS NATS cluster: the env vars themselves are tested in the
// main module (pkg/config, pkg/natsperm, the TLS tests).
func TestHardened(t *testing.T) {
	_, objs := renderFile(t, loadChart(t), "hardened")
	secret := func(name string, typ corev1.SecretType, data map[string]string) *corev1.Secret {
		s := &corev1.Secret{Type: typ, StringData: data}
		s.Name = name
		return s
	}
	tlsData := func(name string) map[string]string {
		return map[string]string{"tls.crt": name + " certificate", "tls.key": name + " key"}
	}
	secrets := []*corev1.Secret{
		secret("cos-nats-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": "NATS CA"}),
		secret("cos-gateway-tls", corev1.SecretTypeTLS, tlsData("gateway")),
		secret("cos-clients-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": "clients CA"}),
		secret("cos-handlers-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": "handlers CA"}),
		secret("cos-handlers-client", corev1.SecretTypeTLS, tlsData("handler client")),
	}
	for _, r := range []natsperm.Role{natsperm.Gateway, natsperm.Worker, natsperm.Projector} {
		secrets = append(secrets, secret("cos-nats-"+string(r), corev1.SecretTypeOpaque,
			map[string]string{"user": natsperm.User(r), "password": "pw-" + string(r)}))
	}
	cl := newCluster(objs, secrets...)

	byRole := map[string]*podProcess{}
	deps := map[string]*appsv1.Deployment{}
	for _, d := range find[*appsv1.Deployment](t, objs, 3) {
		byRole[role(d)] = newPodProcess(t, d, cl, adjustments{binDir: t.TempDir()}, t.TempDir())
		deps[role(d)] = d
	}

	// file checks that variable name points at a file holding want.
	file := func(r, name, want string) {
		t.Helper()
		pp := byRole[r]
		path, ok := pp.env[name]
		if !ok {
			t.Errorf("%s: %s not set", r, name)
			return
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %s=%s: %v", r, name, path, err)
			return
		}
		if string(b) != want {
			t.Errorf("%s: %s holds %q, want %q", r, name, b, want)
		}
	}
	unset := func(r string, names ...string) {
		t.Helper()
		for _, n := range names {
			if v, ok := byRole[r].env[n]; ok {
				t.Errorf("%s: %s=%q set; want it unset", r, n, v)
			}
		}
	}

	// Every role: its own NATS user (exactly one authentication method) and the NATS CA.
	for r, pp := range byRole {
		if got, want := pp.env["COS_NATS_USER"], "cos-"+r; got != want {
			t.Errorf("%s: COS_NATS_USER=%q, want %q (the role's natsPermissions user)", r, got, want)
		}
		file(r, "COS_NATS_PASSWORD_FILE", "pw-"+r)
		file(r, "COS_NATS_TLS_CA_FILE", "NATS CA")
		unset(r, "COS_NATS_CREDS", "COS_NATS_PASSWORD", "COS_NATS_TOKEN", "COS_NATS_TLS_CERT_FILE")
		if !strings.HasPrefix(pp.env["COS_NATS_URL"], "tls://") {
			t.Errorf("%s: COS_NATS_URL=%q, want tls://", r, pp.env["COS_NATS_URL"])
		}
		// Secrets mounted read-only, whole (no subPath), so renewals reach the files.
		volumes := map[string]corev1.Volume{}
		for _, v := range deps[r].Spec.Template.Spec.Volumes {
			volumes[v.Name] = v
		}
		for _, m := range pp.container.VolumeMounts {
			if volumes[m.Name].Secret == nil {
				continue
			}
			if !m.ReadOnly || m.SubPath != "" {
				t.Errorf("%s: Secret volume %s mounted read-only=%v subPath=%q", r, m.Name, m.ReadOnly, m.SubPath)
			}
		}
	}

	// Gateway: TLS with client certificates on the gRPC port, the admin listener, readiness over HTTP.
	file("gateway", "COS_TLS_CERT_FILE", "gateway certificate")
	file("gateway", "COS_TLS_KEY_FILE", "gateway key")
	file("gateway", "COS_TLS_CLIENT_CA_FILE", "clients CA")
	if got := byRole["gateway"].env["COS_ADMIN_ADDRESS"]; got != "127.0.0.1:9001" {
		t.Errorf("gateway: COS_ADMIN_ADDRESS=%q", got)
	}
	gw := byRole["gateway"].container
	if p := gw.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.String() != "metrics" {
		t.Errorf("gateway with TLS: readiness probe %s, want GET /readyz on metrics (a grpc probe cannot speak TLS)", mustYAML(p))
	}
	admin := false
	for _, p := range gw.Ports {
		admin = admin || (p.Name == "admin" && p.ContainerPort == 9001)
	}
	if !admin {
		t.Errorf("gateway: no container port admin 9001: %s", mustYAML(gw.Ports))
	}
	unset("gateway", "COS_WRITE_SIDE_TLS_CA_FILE")
	// No Service for the admin port by default, and no plaintext helm test Pod against a TLS port.
	for _, s := range find[*corev1.Service](t, objs, -1) {
		if strings.HasSuffix(s.Name, "-admin") {
			t.Errorf("Service %s rendered; gateway.admin.service.enabled is false", s.Name)
		}
	}
	find[*corev1.Pod](t, objs, 0)

	// Worker: mTLS to the write handler.
	file("worker", "COS_WRITE_SIDE_TLS_CA_FILE", "handlers CA")
	file("worker", "COS_WRITE_SIDE_TLS_CERT_FILE", "handler client certificate")
	file("worker", "COS_WRITE_SIDE_TLS_KEY_FILE", "handler client key")
	if got := byRole["worker"].env["COS_WRITE_SIDE_TLS_SERVER_NAME"]; got != "bank-handler.bank.svc" {
		t.Errorf("worker: COS_WRITE_SIDE_TLS_SERVER_NAME=%q", got)
	}
	unset("worker", "COS_TLS_CERT_FILE", "COS_ADMIN_ADDRESS")

	// Projector: the read side's file names mounted TLS files.
	pp := byRole["projector"]
	b, err := os.ReadFile(pp.env["COS_READ_SIDE_CONFIG"] + "/bank-balances.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rs map[string]any
	if err := yaml.Unmarshal(b, &rs); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"tlsCaFile": "handlers CA", "tlsCertFile": "handler client certificate", "tlsKeyFile": "handler client key"} {
		path, _ := rs[key].(string)
		got, err := os.ReadFile(pp.localPath(path))
		if err != nil || string(got) != want {
			t.Errorf("projector: read side %s=%q: %q, %v; want %q", key, path, got, err, want)
		}
	}
	if rs["tlsServerName"] != "bank-readside.bank.svc" {
		t.Errorf("projector: tlsServerName=%v", rs["tlsServerName"])
	}

	// The NATS users the roles log in as are the ones natsPermissions renders.
	conf := configMap(t, objs, "cos-cosnats-nats-permissions").Data["accounts.conf"]
	for r := range byRole {
		if !strings.Contains(conf, `user: "cos-`+r+`"`) {
			t.Errorf("accounts.conf has no user cos-%s", r)
		}
	}
}

// TestAdminService: gateway.admin.service.enabled renders a ClusterIP Service on the admin port only,
// and the NetworkPolicy admits it from networkPolicy.adminFrom.
func TestAdminService(t *testing.T) {
	_, objs := renderFile(t, loadChart(t), "hardened", "gateway.admin.address=0.0.0.0:9001", "gateway.admin.service.enabled=true")
	var found bool
	for _, s := range find[*corev1.Service](t, objs, -1) {
		if s.Name == "cos-cosnats-gateway-admin" {
			found = true
			if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 9001 || s.Spec.Ports[0].TargetPort.String() != "admin" {
				t.Errorf("admin Service ports: %s", mustYAML(s.Spec.Ports))
			}
		}
		if s.Name == "cos-cosnats-gateway" && len(s.Spec.Ports) != 1 {
			t.Errorf("the gateway Service carries more than the gRPC port: %s", mustYAML(s.Spec.Ports))
		}
	}
	if !found {
		t.Fatal("no Service cos-cosnats-gateway-admin")
	}
	admitted := false
	for _, np := range find[*networkingv1.NetworkPolicy](t, objs, -1) {
		for _, in := range np.Spec.Ingress {
			for _, p := range in.Ports {
				if p.Port != nil && p.Port.String() == "admin" {
					admitted = admitted || np.Labels["app.kubernetes.io/component"] == "gateway"
				}
			}
		}
	}
	if !admitted {
		t.Error("the gateway's NetworkPolicy does not admit the admin port")
	}
}
