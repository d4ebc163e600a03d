// Package buildinfo tells which build of chief-of-state is running. Release builds stamp Version and
// Revision with -ldflags "-X github.com/cosnats/cosnats/pkg/buildinfo.Version=v1.2.3 -X
// github.com/cosnats/cosnats/pkg/buildinfo.Revision=<git sha>"; a plain `go build` falls back to what
// the Go toolchain recorded (module version, vcs.revision).
package buildinfo

import "runtime/debug"

// Stamped at link time; see the package comment.
var (
	Version  = ""
	Revision = ""
)

// Info is the running build.
type Info struct {
	Version  string // a release tag, or "devel"
	Revision string // the git commit, or "unknown"
}

// Get returns the stamped values, falling back to the toolchain's build information.
func Get() Info {
	info := Info{Version: Version, Revision: Revision}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && info.Revision == "" {
				info.Revision = s.Value
			}
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Revision == "" {
		info.Revision = "unknown"
	}
	return info
}
