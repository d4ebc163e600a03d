package charttest

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// TestLintStrict is `helm lint --strict` with each test values file: any warning fails, as it does
// for the helm command (strict lowers the failing severity from error to warning).
func TestLintStrict(t *testing.T) {
	for _, name := range testValuesFiles {
		t.Run(name, func(t *testing.T) {
			kube, err := common.ParseKubeVersion("v1.31.0")
			if err != nil {
				t.Fatal(err)
			}
			vals := readValues(t, []string{valuesFile(name)})
			linter := lint.RunAll(chartDir, vals, namespace, lint.WithKubeVersion(kube))
			for _, m := range linter.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				} else {
					t.Logf("lint: %s", m)
				}
			}
		})
	}
}

// TestRenderStrict renders the chart with each test values file and decodes every object strictly
// (done by renderFile: an unknown field anywhere fails), then checks what every install must have.
func TestRenderStrict(t *testing.T) {
	c := loadChart(t)
	for _, name := range testValuesFiles {
		t.Run(name, func(t *testing.T) {
			files, objs := renderFile(t, c, name)
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			for _, o := range objs {
				checkMeta(t, o)
			}
			deps := find[*appsv1.Deployment](t, objs, -1)
			if len(deps) < 2 {
				t.Fatalf("want at least the gateway and worker Deployments, got %d", len(deps))
			}
			for _, d := range deps {
				checkDeployment(t, d, objs)
			}
			checkServices(t, objs)
			if !strings.Contains(files["cosnats/templates/NOTES.txt"], "NEVER CHANGE") {
				t.Errorf("NOTES.txt does not warn about the settings that never change:\n%s", files["cosnats/templates/NOTES.txt"])
			}
		})
	}
}

// checkMeta: every namespaced object is in the release namespace (or, for monitoring objects, where
// their values put them) and carries the standard labels.
func checkMeta(t *testing.T, o object) {
	t.Helper()
	var m struct {
		Metadata struct {
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(o.raw, &m); err != nil {
		t.Fatal(err)
	}
	switch o.obj.(type) {
	case *monitoringv1.ServiceMonitor, *monitoringv1.PrometheusRule:
	default:
		if m.Metadata.Namespace != namespace {
			t.Errorf("%s %s: namespace %q, want %q", o.source, m.Metadata.Name, m.Metadata.Namespace, namespace)
		}
	}
	if len(m.Metadata.Name) > 63 {
		t.Errorf("%s: name %q is longer than 63 characters", o.source, m.Metadata.Name)
	}
	for _, l := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
		if m.Metadata.Labels[l] == "" {
			t.Errorf("%s %s: label %s missing", o.source, m.Metadata.Name, l)
		}
	}
}

// role is the component label of a Deployment's pods.
func role(d *appsv1.Deployment) string { return d.Spec.Template.Labels["app.kubernetes.io/component"] }

// checkDeployment checks one role's Deployment against the chart's promises: restricted security,
// probes on the right endpoints, a grace period longer than the drain, checksums that roll the pods,
// selectors that match, and no service links.
func checkDeployment(t *testing.T, d *appsv1.Deployment, objs []object) {
	t.Helper()
	r := role(d)
	pod := d.Spec.Template.Spec
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod labels %v", d.Name, k, v, d.Spec.Template.Labels)
		}
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Errorf("%s: enableServiceLinks must be false (a Service named cos would set COS_PORT)", d.Name)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: the service account token is mounted", d.Name)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod security context is not restricted: %s", d.Name, mustYAML(psc))
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: want 1 container, got %d", d.Name, len(pod.Containers))
	}
	c := pod.Containers[0]
	if want := "/usr/local/bin/" + r; len(c.Command) != 1 || c.Command[0] != want {
		t.Errorf("%s: command %q, want [%s]", d.Name, c.Command, want)
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("%s: container security context is not restricted: %s", d.Name, mustYAML(sc))
	}

	// Probes: liveness is /healthz on the metrics port (alive, not ready); readiness is the gateway's
	// gRPC health (plaintext only, so /readyz while its port has TLS) or /readyz.
	env := plainEnv(t, c, objs)
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["metrics"] == 0 {
		t.Errorf("%s: no metrics port", d.Name)
	}
	if lp := c.LivenessProbe; lp == nil || lp.HTTPGet == nil || lp.HTTPGet.Path != "/healthz" || lp.HTTPGet.Port.String() != "metrics" {
		t.Errorf("%s: liveness probe is not GET /healthz on the metrics port: %s", d.Name, mustYAML(lp))
	}
	rp := c.ReadinessProbe
	switch {
	case rp == nil:
		t.Errorf("%s: no readiness probe", d.Name)
	case r == "gateway" && env["COS_TLS_CERT_FILE"] == "":
		if rp.GRPC == nil || rp.GRPC.Port != ports["grpc"] || rp.GRPC.Service == nil || *rp.GRPC.Service != "" {
			t.Errorf("%s: readiness probe is not the gRPC health of service \"\" on the grpc port %d: %s", d.Name, ports["grpc"], mustYAML(rp))
		}
	default:
		if rp.HTTPGet == nil || rp.HTTPGet.Path != "/readyz" || rp.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s: readiness probe is not GET /readyz on the metrics port: %s", d.Name, mustYAML(rp))
		}
	}

	// The grace period must outlast the preStop sleep plus the drain the process is told to keep to.
	drain, err := strconv.Atoi(env["COS_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("%s: COS_SHUTDOWN_TIMEOUT: %v", d.Name, err)
	}
	sleep := int64(0)
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		sleep = c.Lifecycle.PreStop.Sleep.Seconds
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g <= sleep+int64(drain) {
		t.Errorf("%s: terminationGracePeriodSeconds %v does not exceed preStop %d s + COS_SHUTDOWN_TIMEOUT %d s", d.Name, g, sleep, drain)
	}
	if env["COS_NATS_URL"] == "" && !hasEnvFromSecret(c, "COS_NATS_URL") {
		t.Errorf("%s: no COS_NATS_URL: the process would start an embedded NATS server", d.Name)
	}
	if _, ok := env["COS_READ_SIDE_ENABLED"]; ok != (r == "projector") {
		t.Errorf("%s: COS_READ_SIDE_ENABLED set=%v; only projectors run read sides", d.Name, ok)
	}
	if _, ok := env["COS_WRITE_SIDE_HOST"]; ok != (r == "worker") {
		t.Errorf("%s: COS_WRITE_SIDE_HOST set=%v; only workers call the write handler", d.Name, ok)
	}

	// Checksums of the ConfigMaps the pods read, so that a change rolls them.
	ann := d.Spec.Template.Annotations
	if len(ann["checksum/config"]) != 64 {
		t.Errorf("%s: checksum/config annotation missing: %v", d.Name, ann)
	}
	if _, ok := ann["checksum/readsides"]; ok != (r == "projector") {
		t.Errorf("%s: checksum/readsides present=%v", d.Name, ok)
	}
}

// hasEnvFromSecret reports whether the container takes name from a Secret.
func hasEnvFromSecret(c corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return true
		}
	}
	return false
}

// plainEnv is the container's environment as far as it is known without Secrets: the ConfigMaps of
// envFrom (from the rendered objects) overlaid with plain env values.
func plainEnv(t testing.TB, c corev1.Container, objs []object) map[string]string {
	t.Helper()
	cms := map[string]*corev1.ConfigMap{}
	for _, cm := range find[*corev1.ConfigMap](t, objs, -1) {
		cms[cm.Name] = cm
	}
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		if cm, ok := cms[ef.ConfigMapRef.Name]; ok {
			for k, v := range cm.Data {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

// checkServices: the gateway Service names its gRPC port and says it is gRPC; the metrics Service
// is headless and lists not-ready pods.
func checkServices(t *testing.T, objs []object) {
	t.Helper()
	for _, s := range find[*corev1.Service](t, objs, -1) {
		switch s.Labels["app.kubernetes.io/component"] {
		case "gateway":
			if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Name != "grpc" || s.Spec.Ports[0].AppProtocol == nil || *s.Spec.Ports[0].AppProtocol != "grpc" || s.Spec.Ports[0].TargetPort.String() != "grpc" {
				t.Errorf("gateway Service ports: %s", mustYAML(s.Spec.Ports))
			}
		case "admin":
			if s.Spec.Type != corev1.ServiceTypeClusterIP || len(s.Spec.Ports) != 1 || s.Spec.Ports[0].TargetPort.String() != "admin" ||
				s.Spec.Selector["app.kubernetes.io/component"] != "gateway" {
				t.Errorf("gateway admin Service: %s", mustYAML(s.Spec))
			}
		case "metrics":
			if s.Spec.ClusterIP != corev1.ClusterIPNone || !s.Spec.PublishNotReadyAddresses || s.Spec.Ports[0].Name != "metrics" {
				t.Errorf("metrics Service: %s", mustYAML(s.Spec))
			}
			if _, ok := s.Spec.Selector["app.kubernetes.io/component"]; ok {
				t.Errorf("metrics Service selects one component only: %v", s.Spec.Selector)
			}
		default:
			t.Errorf("unexpected Service %s", s.Name)
		}
	}
}

// TestMinimal: `--set nats.url=… --set writeSide.host=…` alone installs gateway and worker, with the
// defaults of the project, and no projector (no read side to run).
func TestMinimal(t *testing.T) {
	_, objs := renderFile(t, loadChart(t), "minimal")
	deps := find[*appsv1.Deployment](t, objs, 2)
	for _, d := range deps {
		if r := role(d); r != "gateway" && r != "worker" {
			t.Errorf("unexpected Deployment %s", d.Name)
		}
		if *d.Spec.Template.Spec.TerminationGracePeriodSeconds != 30 {
			t.Errorf("%s: grace period %d, want 25 s drain + 5 s margin", d.Name, *d.Spec.Template.Spec.TerminationGracePeriodSeconds)
		}
		if got, want := d.Spec.Template.Spec.Containers[0].Image, "ghcr.io/cosnats/cosnats:"+loadChart(t).Metadata.AppVersion; got != want {
			t.Errorf("%s: image %s, want %s", d.Name, got, want)
		}
	}
	find[*policyv1.PodDisruptionBudget](t, objs, 2)
	find[*autoscalingv2.HorizontalPodAutoscaler](t, objs, 0)
	find[*networkingv1.NetworkPolicy](t, objs, 0)
	find[*monitoringv1.ServiceMonitor](t, objs, 0)
	find[*monitoringv1.PrometheusRule](t, objs, 0)
	find[*corev1.ServiceAccount](t, objs, 1)
}

// TestEverythingOn checks the optional objects and the values that only the everything-on file sets.
func TestEverythingOn(t *testing.T) {
	_, objs := renderFile(t, loadChart(t), "everything-on")
	deps := find[*appsv1.Deployment](t, objs, 3)
	find[*policyv1.PodDisruptionBudget](t, objs, 3)
	hpas := find[*autoscalingv2.HorizontalPodAutoscaler](t, objs, 2)
	find[*networkingv1.NetworkPolicy](t, objs, 3)
	sms := find[*monitoringv1.ServiceMonitor](t, objs, 1)
	rules := find[*monitoringv1.PrometheusRule](t, objs, 1)

	for _, d := range deps {
		c := d.Spec.Template.Spec.Containers[0]
		if d.Spec.Replicas != nil && role(d) != "projector" {
			t.Errorf("%s: replicas set although an HPA scales it", d.Name)
		}
		if !strings.Contains(c.Image, "@sha256:") {
			t.Errorf("%s: image %s not pinned by digest", d.Name, c.Image)
		}
		env := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			env[e.Name] = e
		}
		if e := env["COS_NATS_URL"]; e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "cos-nats" {
			t.Errorf("%s: COS_NATS_URL not from Secret cos-nats: %s", d.Name, mustYAML(e))
		}
		if env["COS_NATS_CREDS"].Value != "/etc/cos/nats-creds/nats.creds" || !mounted(d, "/etc/cos/nats-creds") {
			t.Errorf("%s: NATS credentials not mounted where COS_NATS_CREDS points", d.Name)
		}
		if !mounted(d, "/etc/cos/tls/nats") || !mounted(d, "/etc/ssl/certs/ledger") {
			t.Errorf("%s: NATS TLS or the extra volume not mounted", d.Name)
		}
		if mounted(d, "/etc/cos/tls/handlers") == (role(d) == "gateway") {
			t.Errorf("%s: handler TLS mounted=%v; workers and projectors call handlers, the gateway does not", d.Name, mounted(d, "/etc/cos/tls/handlers"))
		}
		if !strings.Contains(env["OTEL_RESOURCE_ATTRIBUTES"].Value, "k8s.pod.name=$(K8S_POD_NAME)") ||
			!strings.Contains(env["OTEL_RESOURCE_ATTRIBUTES"].Value, "deployment.environment=staging") {
			t.Errorf("%s: OTEL_RESOURCE_ATTRIBUTES = %q", d.Name, env["OTEL_RESOURCE_ATTRIBUTES"].Value)
		}
		if d.Spec.Template.Labels["cost-center"] != "42" || d.Spec.Template.Labels["team"] != "ledger" {
			t.Errorf("%s: pod labels %v lack podLabels and commonLabels", d.Name, d.Spec.Template.Labels)
		}
		// Grace = preStop + drain (40) + margin (10).
		want := d.Spec.Template.Spec.Containers[0].Lifecycle.PreStop.Sleep.Seconds + 50
		if got := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; got != want {
			t.Errorf("%s: grace period %d, want %d", d.Name, got, want)
		}
	}
	for _, h := range hpas {
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || !strings.HasSuffix(h.Spec.ScaleTargetRef.Name, "-"+h.Labels["app.kubernetes.io/component"]) {
			t.Errorf("HPA %s targets %v", h.Name, h.Spec.ScaleTargetRef)
		}
	}
	if sm := sms[0]; sm.Namespace != "monitoring" || sm.Spec.JobLabel != "app.kubernetes.io/name" || sm.Spec.Endpoints[0].Port != "metrics" ||
		len(sm.Spec.NamespaceSelector.MatchNames) != 1 || sm.Spec.NamespaceSelector.MatchNames[0] != namespace {
		t.Errorf("ServiceMonitor: %s", mustYAML(sm.Spec))
	}
	// The alert rules select roles by "role"; the user's relabelings come after the chart's.
	if rl := sms[0].Spec.Endpoints[0].RelabelConfigs; len(rl) != 2 || rl[0].TargetLabel != "role" ||
		len(rl[0].SourceLabels) != 1 || rl[0].SourceLabels[0] != "__meta_kubernetes_pod_label_app_kubernetes_io_component" || rl[1].TargetLabel != "node" {
		t.Errorf("ServiceMonitor relabelings: %s", mustYAML(rl))
	}
	if len(rules[0].Spec.Groups) == 0 {
		t.Error("PrometheusRule has no rule groups")
	}
	// Egress of a worker: DNS, NATS, the write handler's port and the extra rule.
	for _, np := range find[*networkingv1.NetworkPolicy](t, objs, -1) {
		if np.Labels["app.kubernetes.io/component"] != "worker" {
			continue
		}
		var ports []string
		for _, e := range np.Spec.Egress {
			for _, p := range e.Ports {
				ports = append(ports, p.Port.String())
			}
		}
		if got := strings.Join(ports, ","); got != "53,53,4222,7000,4318" {
			t.Errorf("worker egress ports %s, want 53,53,4222,7000,4318", got)
		}
	}
	// The read-side files: every read side, keys in the file form, disabled ones included (the
	// projector knows them and leaves them stopped).
	cm := configMap(t, objs, "cos-readsides")
	if len(cm.Data) != 3 {
		t.Fatalf("read-side files %v, want 3", keys(cm.Data))
	}
	var balances map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["balances.yaml"]), &balances); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"readSideId": "balances", "host": "balances.ledger.svc", "port": float64(7001), "useTls": true,
		"autoStart": false, "enabled": true, "failurePolicy": "STOP", "timeout": float64(5000), "maxInFlight": float64(1)}
	if mustYAML(balances) != mustYAML(want) {
		t.Errorf("balances.yaml:\n%s\nwant:\n%s", mustYAML(balances), mustYAML(want))
	}
}

// mounted reports whether the Deployment's container mounts something at path.
func mounted(d *appsv1.Deployment, path string) bool {
	for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
		if m.MountPath == path {
			return true
		}
	}
	return false
}

// configMap returns the rendered ConfigMap of that name.
func configMap(t testing.TB, objs []object, name string) *corev1.ConfigMap {
	t.Helper()
	for _, cm := range find[*corev1.ConfigMap](t, objs, -1) {
		if cm.Name == name {
			return cm
		}
	}
	t.Fatalf("no ConfigMap %s", name)
	return nil
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestConfigChangeRollsPods: changing a setting of the shared ConfigMap changes every role's
// checksum, changing a read side changes the projector's; the same values render the same checksums.
func TestConfigChangeRollsPods(t *testing.T) {
	c := loadChart(t)
	checksums := func(sets ...string) map[string]string {
		_, objs := renderFile(t, c, "production", sets...)
		out := map[string]string{}
		for _, d := range find[*appsv1.Deployment](t, objs, 3) {
			for _, k := range []string{"checksum/config", "checksum/readsides"} {
				if v, ok := d.Spec.Template.Annotations[k]; ok {
					out[role(d)+" "+k] = v
				}
			}
		}
		return out
	}
	base := checksums()
	if again := checksums(); fmt.Sprint(again) != fmt.Sprint(base) {
		t.Fatalf("the same values render different checksums:\n%v\n%v", base, again)
	}
	logLevel := checksums("config.logLevel=DEBUG")
	for _, r := range []string{"gateway", "worker", "projector"} {
		if logLevel[r+" checksum/config"] == base[r+" checksum/config"] {
			t.Errorf("%s: checksum/config did not change with config.logLevel", r)
		}
	}
	readSide := checksums("readSides.bank-balances.port=50060")
	if readSide["projector checksum/readsides"] == base["projector checksum/readsides"] {
		t.Error("projector: checksum/readsides did not change with a read side's port")
	}
	if readSide["worker checksum/config"] != base["worker checksum/config"] {
		t.Error("worker: checksum/config changed with a read side, which workers do not read")
	}
}

// TestAlertsInSync: the chart's copy of the alert rules is byte-for-byte the project's
// deploy/observability/alerts.yml, which is what its promtool tests check.
func TestAlertsInSync(t *testing.T) {
	want := readFile(t, filepath.Join(repoRoot, "deploy/observability/alerts.yml"))
	got := readFile(t, filepath.Join(chartDir, "files/alerts.yml"))
	if string(got) != string(want) {
		t.Fatal("deploy/helm/cosnats/files/alerts.yml differs from deploy/observability/alerts.yml: copy it over (cp deploy/observability/alerts.yml deploy/helm/cosnats/files/alerts.yml)")
	}
}

// TestExamples: the example values files render, agree with each other and with the example handler
// manifests, and those manifests decode strictly.
func TestExamples(t *testing.T) {
	c := loadChart(t)
	vals := readValues(t, []string{filepath.Join(examplesDir, "cosnats-values.yaml")})
	files, err := render(t, c, renderOpts{vals: vals})
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, files)
	find[*appsv1.Deployment](t, objs, 3)

	natsVals := readNATSExample(t)
	if natsVals.Config.Cluster.Replicas != 3 || !natsVals.Config.Cluster.Enabled {
		t.Errorf("the NATS example is not a 3-node cluster: %+v", natsVals.Config.Cluster)
	}
	if !natsVals.Config.JetStream.Enabled || !natsVals.Config.JetStream.FileStore.Enabled || natsVals.Config.JetStream.MemoryStore.Enabled {
		t.Errorf("the NATS example does not keep JetStream on files only: %+v", natsVals.Config.JetStream)
	}
	if got := vals["nats"].(map[string]any)["replicas"]; got != float64(natsVals.Config.Cluster.Replicas) {
		t.Errorf("cosnats-values.yaml nats.replicas = %v, want the NATS example's cluster size %d", got, natsVals.Config.Cluster.Replicas)
	}

	// The bank example's Services are where cosnats-values.yaml sends the workers and projectors.
	manifest := readFile(t, filepath.Join(examplesDir, "bank-example.yaml"))
	bank := decodeAll(t, map[string]string{"bank-example.yaml": string(manifest)})
	svcs := map[string]int32{}
	for _, s := range find[*corev1.Service](t, bank, 2) {
		svcs[s.Name+".bank.svc.cluster.local"] = s.Spec.Ports[0].Port
	}
	ws := vals["writeSide"].(map[string]any)
	if svcs[ws["host"].(string)] != int32(ws["port"].(float64)) {
		t.Errorf("writeSide %v:%v is not a Service of bank-example.yaml (%v)", ws["host"], ws["port"], svcs)
	}
	for id, rs := range vals["readSides"].(map[string]any) {
		rs := rs.(map[string]any)
		if svcs[rs["host"].(string)] != int32(rs["port"].(float64)) {
			t.Errorf("read side %s %v:%v is not a Service of bank-example.yaml (%v)", id, rs["host"], rs["port"], svcs)
		}
	}
	for _, d := range find[*appsv1.Deployment](t, bank, 2) {
		if img, want := d.Spec.Template.Spec.Containers[0].Image, "ghcr.io/cosnats/cosnats:"+c.Metadata.AppVersion; img != want {
			t.Errorf("bank-example.yaml %s: image %s, want the chart's default %s", d.Name, img, want)
		}
	}
}

// natsExample is the part of deploy/helm/examples/nats-values.yaml (values of the official NATS
// chart) that the tests rely on.
type natsExample struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				Enabled bool `json:"enabled"`
			} `json:"fileStore"`
			MemoryStore struct {
				Enabled bool `json:"enabled"`
			} `json:"memoryStore"`
		} `json:"jetstream"`
		// Merge holds nats.conf settings added verbatim.
		Merge map[string]any `json:"merge"`
	} `json:"config"`
}

func readNATSExample(t testing.TB) natsExample {
	t.Helper()
	var v natsExample
	if err := yaml.Unmarshal(readFile(t, filepath.Join(examplesDir, "nats-values.yaml")), &v); err != nil {
		t.Fatal(err)
	}
	return v
}
