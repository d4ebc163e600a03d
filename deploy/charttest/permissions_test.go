package charttest

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/natsperm"
)

// TestNATSPermissions: natsPermissions.enabled renders the NATS users of every role exactly as
// pkg/natsperm lists them for the chart's layout.natsPrefix (the everything-on values use LEDGER), and
// nothing by default.
func TestNATSPermissions(t *testing.T) {
	c := loadChart(t)
	_, objs := renderFile(t, c, "everything-on")
	var cm *corev1.ConfigMap
	for _, o := range find[*corev1.ConfigMap](t, objs, -1) {
		if strings.HasSuffix(o.Name, "-nats-permissions") {
			cm = o
		}
	}
	if cm == nil {
		t.Fatal("no ConfigMap <fullname>-nats-permissions")
	}
	lay, err := layout.New("LEDGER")
	if err != nil {
		t.Fatal(err)
	}
	got, want := cm.Data["accounts.conf"], natsperm.Conf(lay)
	if !strings.HasSuffix(got, want) {
		t.Errorf("accounts.conf is not natsperm.Conf for LEDGER:\n%s\nwant it to end with:\n%s", got, want)
	}
	if strings.Contains(got, "CHARTPFX") || strings.Contains(got, "chartpfx") || strings.Contains(got, "cos.events") {
		t.Errorf("accounts.conf names another layout:\n%s", got)
	}

	_, objs = renderFile(t, c, "minimal")
	for _, o := range find[*corev1.ConfigMap](t, objs, -1) {
		if strings.HasSuffix(o.Name, "-nats-permissions") {
			t.Errorf("%s rendered although natsPermissions.enabled is false", o.Name)
		}
	}
}
