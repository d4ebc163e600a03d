package bench

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes where a benchmark ran. It deliberately records no host name.
type Machine struct {
	CPU       string  `json:"cpu"`        // CPU model, e.g. "AMD EPYC 7B13"; "unknown" if not found
	Cores     int     `json:"cores"`      // logical CPUs usable by the process (runtime.NumCPU)
	MemoryGiB float64 `json:"memory_gib"` // total memory; 0 if unknown
	OS        string  `json:"os"`         // GOOS/GOARCH, e.g. "linux/amd64"
	Kernel    string  `json:"kernel"`     // kernel release (uname -r); empty if unknown
	GoVersion string  `json:"go_version"` // runtime.Version()
}

// DescribeMachine describes this machine: the CPU model from /proc/cpuinfo, runtime.NumCPU, total
// memory from /proc/meminfo, runtime.GOOS/GOARCH, the kernel release from
// /proc/sys/kernel/osrelease and runtime.Version(). Whatever cannot be read stays empty (the CPU
// model is then "unknown").
func DescribeMachine() Machine {
	m := Machine{
		CPU:       "unknown",
		Cores:     runtime.NumCPU(),
		OS:        runtime.GOOS + "/" + runtime.GOARCH,
		GoVersion: runtime.Version(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if cpu := parseCPUModel(string(b)); cpu != "" {
			m.CPU = cpu
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryGiB = parseMemTotalGiB(string(b))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// parseCPUModel finds the CPU model in /proc/cpuinfo text: "model name" (x86), else "Hardware" or
// "Processor" (some ARM kernels), else "cpu" (POWER); "" if none.
func parseCPUModel(cpuinfo string) string {
	found := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.Join(strings.Fields(v), " ")
		if v == "" {
			continue
		}
		if _, dup := found[k]; !dup {
			found[k] = v
		}
	}
	for _, k := range []string{"model name", "Hardware", "Processor", "cpu"} {
		if v := found[k]; v != "" {
			return v
		}
	}
	return ""
}

// parseMemTotalGiB reads "MemTotal: N kB" from /proc/meminfo text, in GiB; 0 if absent.
func parseMemTotalGiB(meminfo string) float64 {
	sc := bufio.NewScanner(strings.NewReader(meminfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "MemTotal:" {
			continue
		}
		kb, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return 0
		}
		return kb / (1 << 20)
	}
	return 0
}
