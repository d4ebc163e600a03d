package bench

import (
	"os/exec"
	"syscall"
)

// setDeathSignal has the kernel kill the child if cosbench dies without stopping it (e.g. SIGKILL),
// so a benchmark never leaves orphans behind.
func setDeathSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
