package charttest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// imageEnv is the environment the image itself sets (Dockerfile ENV): the container starts with it
// and the pod's env is added on top.
var imageEnv = map[string]string{"PATH": "/usr/local/bin:/usr/bin:/bin", "COS_DATA_DIR": "/var/lib/cos"}

// cluster is what a pod's references resolve against: the rendered ConfigMaps and the Secrets that
// exist in the namespace (the test's).
type cluster struct {
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

func newCluster(objs []object, secrets ...*corev1.Secret) cluster {
	c := cluster{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	for _, o := range objs {
		if cm, ok := o.obj.(*corev1.ConfigMap); ok {
			c.configMaps[cm.Name] = cm
		}
	}
	for _, s := range secrets {
		c.secrets[s.Name] = s
	}
	return c
}

// podProcess is one container of a rendered Deployment turned into a local process: the command,
// the environment as the kubelet would build it, and its volumes written to local directories.
type podProcess struct {
	name      string
	container corev1.Container
	grace     time.Duration
	bin       string
	args      []string
	env       map[string]string
	envOrder  []string
	mounts    map[string]string // mountPath → local directory
	ports     map[int32]int     // containerPort → local port
}

// Adjustments are the only differences between the pod and the local process; each exists because
// one host cannot give every pod its own filesystem and network namespace.
type adjustments struct {
	// binDir replaces the directory of the command (/usr/local/bin in the image).
	binDir string
	// ports maps container ports to local ports; a port not in it is used as it is.
	ports map[int32]int
	// env rewrites variables whose rendered value holds a container address (e.g. the metrics
	// listener): name → func(rendered value) new value.
	env map[string]func(string) (string, error)
}

// newPodProcess resolves a Deployment's single container: env and envFrom from the cluster's
// ConfigMaps and Secrets (failing, like the kubelet, on a missing required one), $(VAR) references,
// the downward API, and the volumes mounted into it, written under dir.
func newPodProcess(t testing.TB, d *appsv1.Deployment, c cluster, adj adjustments, dir string) *podProcess {
	t.Helper()
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("%s: the wiring test runs pods of exactly one container", d.Name)
	}
	ctr := spec.Containers[0]
	p := &podProcess{name: d.Name, container: ctr, env: map[string]string{}, mounts: map[string]string{}, ports: map[int32]int{}}
	if spec.TerminationGracePeriodSeconds != nil {
		p.grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	} else {
		p.grace = 30 * time.Second // Kubernetes' default
	}
	for _, cp := range ctr.Ports {
		if lp, ok := adj.ports[cp.ContainerPort]; ok {
			p.ports[cp.ContainerPort] = lp
		} else {
			p.ports[cp.ContainerPort] = int(cp.ContainerPort)
		}
	}
	podName := d.Name + "-0"

	// Volumes, written out as the kubelet would project them.
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range ctr.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Fatalf("%s: volumeMount %s names no volume", d.Name, m.Name)
		}
		local := filepath.Join(dir, d.Name, "volumes", m.Name)
		if err := os.MkdirAll(local, 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case v.ConfigMap != nil:
			cm, ok := c.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Fatalf("%s: volume %s: ConfigMap %s does not exist (the pod would not start)", d.Name, v.Name, v.ConfigMap.Name)
			}
			writeVolume(t, local, stringData(cm.Data), v.ConfigMap.Items, v.ConfigMap.DefaultMode)
		case v.Secret != nil:
			s, ok := c.secrets[v.Secret.SecretName]
			if !ok {
				t.Fatalf("%s: volume %s: Secret %s does not exist (the pod would not start)", d.Name, v.Name, v.Secret.SecretName)
			}
			writeVolume(t, local, stringData(secretData(s)), v.Secret.Items, v.Secret.DefaultMode)
		case v.EmptyDir != nil:
		default:
			t.Fatalf("%s: volume %s is of a kind the wiring test does not project", d.Name, v.Name)
		}
		p.mounts[m.MountPath] = local
	}

	// The environment: image ENV, then envFrom in order, then env in order (later wins), with
	// $(VAR) expanded against what is defined before, as the kubelet does.
	set := func(k, v string) {
		if _, ok := p.env[k]; !ok {
			p.envOrder = append(p.envOrder, k)
		}
		p.env[k] = v
	}
	for k, v := range imageEnv {
		set(k, v)
	}
	for _, ef := range ctr.EnvFrom {
		var data map[string]string
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := c.configMaps[ef.ConfigMapRef.Name]
			if !ok && !isOptional(ef.ConfigMapRef.Optional) {
				t.Fatalf("%s: envFrom ConfigMap %s does not exist", d.Name, ef.ConfigMapRef.Name)
			}
			if ok {
				data = cm.Data
			}
		case ef.SecretRef != nil:
			s, ok := c.secrets[ef.SecretRef.Name]
			if !ok && !isOptional(ef.SecretRef.Optional) {
				t.Fatalf("%s: envFrom Secret %s does not exist", d.Name, ef.SecretRef.Name)
			}
			if ok {
				data = secretData(s)
			}
		}
		for k, v := range data {
			set(ef.Prefix+k, v)
		}
	}
	for _, e := range ctr.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, p.env))
			continue
		}
		v, ok := c.valueFrom(t, d.Name, podName, e)
		if ok {
			set(e.Name, v)
		}
	}

	// The adjustments: mounted paths and container addresses that differ on this host.
	for k, v := range p.env {
		p.env[k] = p.localPath(v)
	}
	for name, rewrite := range adj.env {
		v, ok := p.env[name]
		if !ok {
			t.Fatalf("%s: %s is not in the rendered environment", d.Name, name)
		}
		nv, err := rewrite(v)
		if err != nil {
			t.Fatalf("%s: %s=%q: %v", d.Name, name, v, err)
		}
		p.env[name] = nv
	}
	if len(ctr.Command) == 0 {
		t.Fatalf("%s: no command (the image's default would run)", d.Name)
	}
	cmd := append(append([]string{}, ctr.Command...), ctr.Args...)
	for i := range cmd {
		cmd[i] = p.localPath(expand(cmd[i], p.env))
	}
	if filepath.Dir(cmd[0]) != "/usr/local/bin" {
		t.Fatalf("%s: command %s is not one of the image's binaries", d.Name, cmd[0])
	}
	p.bin, p.args = filepath.Join(adj.binDir, filepath.Base(cmd[0])), cmd[1:]
	return p
}

// valueFrom resolves one env var's valueFrom; ok is false for an optional reference that is absent.
func (c cluster) valueFrom(t testing.TB, deployment, podName string, e corev1.EnvVar) (string, bool) {
	t.Helper()
	vf := e.ValueFrom
	switch {
	case vf.SecretKeyRef != nil:
		s, ok := c.secrets[vf.SecretKeyRef.Name]
		if ok {
			if v, ok := secretData(s)[vf.SecretKeyRef.Key]; ok {
				return v, true
			}
		}
		if isOptional(vf.SecretKeyRef.Optional) {
			return "", false
		}
		t.Fatalf("%s: %s: key %s of Secret %s does not exist (the pod would not start)", deployment, e.Name, vf.SecretKeyRef.Key, vf.SecretKeyRef.Name)
	case vf.ConfigMapKeyRef != nil:
		cm, ok := c.configMaps[vf.ConfigMapKeyRef.Name]
		if ok {
			if v, ok := cm.Data[vf.ConfigMapKeyRef.Key]; ok {
				return v, true
			}
		}
		if isOptional(vf.ConfigMapKeyRef.Optional) {
			return "", false
		}
		t.Fatalf("%s: %s: key %s of ConfigMap %s does not exist", deployment, e.Name, vf.ConfigMapKeyRef.Key, vf.ConfigMapKeyRef.Name)
	case vf.FieldRef != nil:
		switch vf.FieldRef.FieldPath {
		case "metadata.name":
			return podName, true
		case "metadata.namespace":
			return namespace, true
		case "status.podIP", "status.hostIP":
			return "127.0.0.1", true
		}
		t.Fatalf("%s: %s: field %s is not resolved by the wiring test", deployment, e.Name, vf.FieldRef.FieldPath)
	}
	t.Fatalf("%s: %s: a valueFrom the wiring test does not resolve: %s", deployment, e.Name, mustYAML(vf))
	return "", false
}

func isOptional(b *bool) bool { return b != nil && *b }

func stringData(m map[string]string) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out
}

// secretData is a Secret's data, with stringData merged in as the API server does on write.
func secretData(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}

// writeVolume writes a ConfigMap's or Secret's keys (or only the listed items, under their paths)
// into dir, with the volume's file mode.
func writeVolume(t testing.TB, dir string, data map[string][]byte, items []corev1.KeyToPath, mode *int32) {
	t.Helper()
	perm := os.FileMode(0o644)
	if mode != nil {
		perm = os.FileMode(*mode)
	}
	files := map[string][]byte{}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = v
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			t.Fatalf("volume item %s: no such key", it.Key)
		}
		files[it.Path] = v
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, content, perm); err != nil {
			t.Fatal(err)
		}
	}
}

// varRef is a $(VAR) reference in an env value or argument.
var varRef = regexp.MustCompile(`\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)`)

// expand replaces $(VAR) by VAR's value when VAR is defined, and $$ by $, as Kubernetes does.
func expand(s string, env map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// localPath maps a path inside a mount of the container to the local directory holding the mount.
func (p *podProcess) localPath(v string) string {
	for mountPath, local := range p.mounts {
		if v == mountPath {
			return local
		}
		if strings.HasPrefix(v, mountPath+"/") {
			return local + strings.TrimPrefix(v, mountPath)
		}
	}
	return v
}

// environ is the process environment, in the order the kubelet would define it.
func (p *podProcess) environ() []string {
	out := make([]string, 0, len(p.envOrder))
	for _, k := range p.envOrder {
		out = append(out, k+"="+p.env[k])
	}
	return out
}

// localPort is where a probe's port (a number or a container port's name) is reached locally.
func (p *podProcess) localPort(t testing.TB, port intstr.IntOrString) int {
	t.Helper()
	if port.Type == intstr.String {
		for _, cp := range p.container.Ports {
			if cp.Name == port.StrVal {
				return p.ports[cp.ContainerPort]
			}
		}
		t.Fatalf("%s: probe port %q names no container port", p.name, port.StrVal)
	}
	if lp, ok := p.ports[port.IntVal]; ok {
		return lp
	}
	return int(port.IntVal)
}

// probe runs a probe once, as the kubelet would: HTTP GET (2xx and 3xx succeed) or gRPC health
// (SERVING succeeds).
func (p *podProcess) probe(t testing.TB, ctx context.Context, pr *corev1.Probe) error {
	t.Helper()
	if pr == nil {
		return fmt.Errorf("%s: no probe", p.name)
	}
	timeout := time.Second
	if pr.TimeoutSeconds > 0 {
		timeout = time.Duration(pr.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case pr.HTTPGet != nil:
		url := "http://127.0.0.1:" + strconv.Itoa(p.localPort(t, pr.HTTPGet.Port)) + pr.HTTPGet.Path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("%s: GET %s: %s", p.name, pr.HTTPGet.Path, resp.Status)
		}
		return nil
	case pr.GRPC != nil:
		addr := "127.0.0.1:" + strconv.Itoa(p.localPort(t, intstr.FromInt32(pr.GRPC.Port)))
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		service := ""
		if pr.GRPC.Service != nil {
			service = *pr.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return fmt.Errorf("%s: gRPC health %q: %w", p.name, service, err)
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("%s: gRPC health %q: %s", p.name, service, resp.Status)
		}
		return nil
	}
	return fmt.Errorf("%s: a probe handler the wiring test does not run: %s", p.name, mustYAML(pr))
}
