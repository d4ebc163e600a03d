// Command vulncheck reads govulncheck's JSON (-format json) on stdin and decides: it fails when our code
// calls a vulnerable function of a module we require (fix: upgrade that module), and reports, without
// failing, vulnerabilities our code calls in the Go standard library, which only a newer Go toolchain
// fixes (SECURITY.md says how we take those).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
)

type frame struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Package  string `json:"package"`
	Function string `json:"function"`
}

type message struct {
	Finding *struct {
		OSV          string  `json:"osv"`
		FixedVersion string  `json:"fixed_version"`
		Trace        []frame `json:"trace"`
	} `json:"finding"`
}

func main() {
	code, err := run(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulncheck:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(in io.Reader, out io.Writer) (int, error) {
	dec := json.NewDecoder(in)
	called := map[string]frame{} // osv → the vulnerable frame, for findings our code reaches
	fixed := map[string]string{}
	for {
		var m message
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("govulncheck output: %w", err)
		}
		f := m.Finding
		// Only a finding whose trace reaches a function is code we call; module- and package-level
		// findings are dependencies that are present but not used.
		if f == nil || len(f.Trace) == 0 || f.Trace[0].Function == "" {
			continue
		}
		called[f.OSV] = f.Trace[0]
		fixed[f.OSV] = f.FixedVersion
	}
	ids := make([]string, 0, len(called))
	for id := range called {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	failed := 0
	for _, id := range ids {
		fr := called[id]
		where := fr.Package + "." + fr.Function
		if fr.Module == "stdlib" {
			fmt.Fprintf(out, "stdlib   %s in %s (Go %s): fixed in Go %s — needs a newer toolchain\n", id, where, fr.Version, fixed[id])
			continue
		}
		failed++
		fmt.Fprintf(out, "MODULE   %s in %s (%s@%s): fixed in %s — upgrade it\n", id, where, fr.Module, fr.Version, fixed[id])
	}
	fmt.Fprintf(out, "%d vulnerabilities reached by our code: %d in required modules, %d in the standard library\n",
		len(ids), failed, len(ids)-failed)
	if failed > 0 {
		return 1, nil
	}
	return 0, nil
}
