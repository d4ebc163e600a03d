package bench

import (
	"encoding/json"
	"math"
	"runtime"
	"strings"
	"testing"
)

func TestDescribeMachine(t *testing.T) {
	m := DescribeMachine()
	if m.Cores != runtime.NumCPU() {
		t.Errorf("cores = %d, want %d", m.Cores, runtime.NumCPU())
	}
	if m.GoVersion != runtime.Version() || m.OS != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("go %q os %q", m.GoVersion, m.OS)
	}
	if m.CPU == "" {
		t.Error("empty CPU")
	}
	if runtime.GOOS == "linux" {
		if m.MemoryGiB <= 0 {
			t.Errorf("memory = %v GiB", m.MemoryGiB)
		}
		if m.Kernel == "" {
			t.Error("empty kernel")
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(string(b)), "host") {
		t.Errorf("machine records a host name: %s", b)
	}
	t.Logf("%s", b)
}

func TestParseProcFiles(t *testing.T) {
	x86 := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)  CPU @ 2.20GHz\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n"
	if got := parseCPUModel(x86); got != "Intel(R) Xeon(R) CPU @ 2.20GHz" {
		t.Errorf("x86: %q", got)
	}
	arm := "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n\nHardware\t: BCM2835\n"
	if got := parseCPUModel(arm); got != "BCM2835" {
		t.Errorf("arm: %q", got)
	}
	if got := parseCPUModel("processor : 0\n"); got != "" {
		t.Errorf("none: %q", got)
	}

	mem := "MemTotal:       16303588 kB\nMemFree:         1234 kB\n"
	if got := parseMemTotalGiB(mem); math.Abs(got-15.548) > 0.001 {
		t.Errorf("mem = %v", got)
	}
	if got := parseMemTotalGiB("MemFree: 1 kB\n"); got != 0 {
		t.Errorf("no MemTotal: %v", got)
	}
}
