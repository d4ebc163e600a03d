package charttest

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// clusterObjects answers the chart's `lookup` calls from a set of objects, as the API server of a
// cluster holding them would: client-go's in-memory object store behind the dynamic client that Helm
// itself uses for lookup. Only ConfigMaps are looked up by the chart.
type clusterObjects struct{ client dynamic.Interface }

func newClusterObjects(objs ...runtime.Object) clusterObjects {
	return clusterObjects{client: dynamicfake.NewSimpleDynamicClient(clientgoscheme.Scheme, objs...)}
}

func (c clusterObjects) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, false, err
	}
	resource := strings.ToLower(kind) + "s" // ConfigMap → configmaps
	return c.client.Resource(gv.WithResource(resource)), true, nil
}

// TestLayoutGuard: the settings that can never change are recorded at install in a ConfigMap that
// survives uninstall, and an upgrade (or re-install) that changes one fails with a message naming it;
// an upgrade that keeps them renders.
func TestLayoutGuard(t *testing.T) {
	c := loadChart(t)
	base := []string{valuesFile("minimal")}

	// The install: nothing recorded yet.
	files, err := render(t, c, renderOpts{vals: readValues(t, base), clientsOf: newClusterObjects()})
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	recorded := configMap(t, decodeAll(t, files), "cos-cosnats-layout")
	if recorded.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the layout ConfigMap is not kept on uninstall: %v", recorded.Annotations)
	}
	if recorded.Data["COS_NUM_SHARDS"] != "9" || recorded.Data["COS_NATS_PREFIX"] != "COS" {
		t.Fatalf("recorded %v, want COS_NUM_SHARDS=9, COS_NATS_PREFIX=COS", recorded.Data)
	}
	cluster := newClusterObjects(recorded)

	for _, tc := range []struct {
		name string
		sets []string
		want []string // empty: the upgrade renders
	}{
		{name: "same layout", sets: []string{"gateway.replicaCount=5"}},
		{name: "numShards", sets: []string{"layout.numShards=12"},
			want: []string{"layout.numShards cannot change after install", "COS_NUM_SHARDS=9", "ledger/cos-cosnats-layout", `Set layout.numShards back to "9"`}},
		{name: "natsPrefix", sets: []string{"layout.natsPrefix=LEDGER"},
			want: []string{"layout.natsPrefix cannot change after install", "COS_NATS_PREFIX=COS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, c, renderOpts{vals: readValues(t, base, tc.sets...), upgrade: true, clientsOf: cluster})
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("upgrade: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("the upgrade rendered; want it refused")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}

	// A ConfigMap of that name without the records (not the chart's) does not block anything.
	foreign := &corev1.ConfigMap{}
	foreign.Name, foreign.Namespace = recorded.Name, recorded.Namespace
	foreign.Data = map[string]string{"other": "x"}
	if _, err := render(t, c, renderOpts{vals: readValues(t, base, "layout.numShards=12"), upgrade: true, clientsOf: newClusterObjects(foreign)}); err != nil {
		t.Errorf("a ConfigMap without records blocked the render: %v", err)
	}
}
