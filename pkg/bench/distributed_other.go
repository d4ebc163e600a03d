//go:build !linux

package bench

import "os/exec"

// setDeathSignal does nothing here: only Linux has a parent-death signal; children are still
// stopped on every path out of the scenario.
func setDeathSignal(*exec.Cmd) {}
