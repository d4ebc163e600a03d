package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FailurePolicy says what a read side does when its handler fails on an event (successful=false,
// an error or a timeout).
type FailurePolicy string

// The failure policies accepted in COS_READ_SIDE_CONFIG__FAILURE_POLICY__<ID> and in the
// failurePolicy key of the file form (case-insensitive; REPLAY-SKIP and REPLAY-STOP are accepted
// for REPLAY_SKIP and REPLAY_STOP, and RETRY or an empty value for FailureRetry).
const (
	// FailureRetry (unset) retries the event with capped exponential backoff, without blocking
	// the other shards. It is this project's default.
	FailureRetry FailurePolicy = ""
	// FailureStop stops the shard of the read side on which the event failed.
	FailureStop FailurePolicy = "STOP"
	// FailureSkip skips the failed event and goes on with the next one.
	FailureSkip FailurePolicy = "SKIP"
	// FailureReplaySkip retries the event 5 times, 5 s apart, then skips it.
	FailureReplaySkip FailurePolicy = "REPLAY_SKIP"
	// FailureReplayStop retries the event 5 times, 5 s apart, then stops the shard.
	FailureReplayStop FailurePolicy = "REPLAY_STOP"
)

// defaultReadSideTimeout is the default of ReadSide.Timeout.
const defaultReadSideTimeout = 30 * time.Second

// Bounds of ReadSide.MaxInFlight.
const (
	DefaultReadSideMaxInFlight = 64
	MaxReadSideMaxInFlight     = 10000
)

// Names of the read-side variables.
const (
	envReadSideConfig = "COS_READ_SIDE_CONFIG"   // file form: a YAML file or a folder of them
	envReadSidePrefix = "COS_READ_SIDE_CONFIG__" // env form: COS_READ_SIDE_CONFIG__<SETTING>__<ID>
)

// readSideIDRE is the syntax of a read side id, which becomes part of NATS consumer names.
var readSideIDRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?$`)

// readSideSettings maps the SETTING part of an env-form variable to the key of the file form.
var readSideSettings = map[string]string{
	"HOST":           "host",
	"PORT":           "port",
	"USE_TLS":        "useTls",
	"AUTO_START":     "autoStart",
	"ENABLED":        "enabled",
	"FAILURE_POLICY": "failurePolicy",
	"TIMEOUT":        "timeout",
	"MAX_IN_FLIGHT":  "maxInFlight",
	// TLS beyond USE_TLS (ReadSide.TLS).
	"TLS_CA_FILE":     "tlsCaFile",
	"TLS_CERT_FILE":   "tlsCertFile",
	"TLS_KEY_FILE":    "tlsKeyFile",
	"TLS_SERVER_NAME": "tlsServerName",
}

// envSettingOf is the inverse of readSideSettings.
var envSettingOf = func() map[string]string {
	m := make(map[string]string, len(readSideSettings))
	for s, k := range readSideSettings {
		m[k] = s
	}
	return m
}()

const (
	settingsHelp = "use HOST, PORT, USE_TLS, AUTO_START, ENABLED, FAILURE_POLICY, TIMEOUT, MAX_IN_FLIGHT, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE or TLS_SERVER_NAME"
	keysHelp     = "known keys: readSideId, host, port, useTls, autoStart, enabled, failurePolicy, timeout, maxInFlight, tlsCaFile, tlsCertFile, tlsKeyFile, tlsServerName"
	policyHelp   = "use STOP, SKIP, REPLAY_SKIP, REPLAY_STOP, REPLAY-SKIP, REPLAY-STOP, or RETRY (the default: retry with backoff)"
)

// ReadSide describes one of the user's read-side handlers (ReadSideHandlerService). In the env
// form each field is the variable COS_READ_SIDE_CONFIG__<SETTING>__<ID>; in the file form it is
// the YAML key named in brackets.
type ReadSide struct {
	// ID (readSideId) must match ^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?$: it becomes part of
	// NATS consumer names and is sent as read_side_id.
	ID     string
	Host   string // HOST (host), required
	Port   int    // PORT (port), required, 1..65535
	UseTLS bool   // USE_TLS (useTls) [false]: TLS with the system roots
	// TLS: TLS_CA_FILE (tlsCaFile) a PEM CA to trust instead of the system roots, TLS_CERT_FILE
	// (tlsCertFile) and TLS_KEY_FILE (tlsKeyFile) a client certificate (mTLS), TLS_SERVER_NAME
	// (tlsServerName) the name to verify; any of them turns TLS on.
	TLS ClientTLS
	// AutoStart (AUTO_START, autoStart) [true]: false means the read side starts paused.
	AutoStart bool
	// Enabled (ENABLED, enabled) [true]: false means the read side is not started at all.
	Enabled       bool
	FailurePolicy FailurePolicy // FAILURE_POLICY (failurePolicy) [FailureRetry]
	// Timeout (TIMEOUT, timeout, given in milliseconds) [30s] bounds each HandleReadSide call;
	// > 0.
	Timeout time.Duration
	// MaxInFlight (MAX_IN_FLIGHT, maxInFlight) [64], 1..10000: how many events of one shard may be
	// in delivery at once. Events of one entity are always delivered one at a time, in order;
	// events of different entities of a shard go in parallel up to this bound. 1 delivers a
	// shard strictly one event at a time, as COS did.
	MaxInFlight int
}

// newReadSide returns the read side id with every default applied.
func newReadSide(id string) ReadSide {
	return ReadSide{ID: id, AutoStart: true, Enabled: true, Timeout: defaultReadSideTimeout, MaxInFlight: DefaultReadSideMaxInFlight}
}

// EnabledReadSides returns the read sides to run: those with Enabled set, in ID order, when
// ReadSideEnabled (COS_READ_SIDE_ENABLED) is true, and nil otherwise or when there are none.
func (c Config) EnabledReadSides() []ReadSide {
	if !c.ReadSideEnabled {
		return nil
	}
	var out []ReadSide
	for _, r := range c.ReadSides {
		if r.Enabled {
			out = append(out, r)
		}
	}
	return out
}

// Validate checks a read side, for instance one built in code: the id syntax, the host and port
// (required), a positive timeout and a known failure policy. Messages start with
// `read side "<id>": <key>`, key being the name of the field in the file form; all problems
// are joined with errors.Join.
func (r ReadSide) Validate() error {
	var k checker
	r.validate(&k)
	return errors.Join(k.errs...)
}

func (r ReadSide) validate(k *checker) {
	prefix := fmt.Sprintf("read side %q: ", r.ID)
	checkReadSideID(k, prefix+"readSideId", r.ID)
	port := portUnset
	if r.Port != 0 {
		port = portGiven
	}
	r.check(k, func(key string) string { return prefix + key }, port)
}

// checkReadSides validates read sides built in code (Config.Validate): each one, and that no id
// repeats.
func checkReadSides(k *checker, sides []ReadSide) {
	seen := make(map[string]bool, len(sides))
	for _, r := range sides {
		r.validate(k)
		if seen[r.ID] {
			k.fail("read side %q: readSideId: defined more than once", r.ID)
		}
		seen[r.ID] = true
	}
}

func checkReadSideID(k *checker, name, id string) {
	if !readSideIDRE.MatchString(id) {
		k.fail("%s: %q is not a valid read side id (it must match %s)", name, id, readSideIDRE)
	}
}

// portState tells check whether a port was given and parsed.
type portState int

const (
	portUnset   portState = iota // not given: "required"
	portGiven                    // given and parsed: range-checked
	portInvalid                  // given but unparsable, already reported: not checked
)

// check validates every field of r but the id. name maps a file-form key to the prefix of the
// messages about it.
func (r ReadSide) check(k *checker, name func(key string) string, port portState) {
	switch {
	case r.Host == "":
		k.fail("%s: required", name("host"))
	case !validHost(r.Host):
		k.fail("%s: %q is not a host name or IP address", name("host"), r.Host)
	}
	switch port {
	case portUnset:
		k.fail("%s: required", name("port"))
	case portGiven:
		k.between(name("port"), r.Port, 1, 65535)
	}
	if r.Timeout <= 0 {
		k.fail("%s: must be greater than 0, got %v", name("timeout"), r.Timeout)
	}
	if !r.FailurePolicy.valid() {
		k.fail("%s: %q is not a failure policy (%s)", name("failurePolicy"), r.FailurePolicy, policyHelp)
	}
	k.between(name("maxInFlight"), r.MaxInFlight, 1, MaxReadSideMaxInFlight)
	r.TLS.check(k, func(field string) string { return name(tlsKeyOf[field]) })
}

// tlsKeyOf maps the fields named by ClientTLS.check to the file-form keys.
var tlsKeyOf = map[string]string{
	"CA_FILE": "tlsCaFile", "CERT_FILE": "tlsCertFile", "KEY_FILE": "tlsKeyFile", "SERVER_NAME": "tlsServerName",
}

func (f FailurePolicy) valid() bool {
	switch f {
	case FailureRetry, FailureStop, FailureSkip, FailureReplaySkip, FailureReplayStop:
		return true
	}
	return false
}

// parseFailurePolicy reads a failure policy: case-insensitive, hyphens for underscores, and
// RETRY or empty for FailureRetry.
func parseFailurePolicy(s string) (FailurePolicy, bool) {
	f := FailurePolicy(strings.ReplaceAll(strings.ToUpper(strings.TrimSpace(s)), "-", "_"))
	if f == "RETRY" {
		return FailureRetry, true
	}
	return f, f.valid()
}

// readSides parses the read sides, from the file form when COS_READ_SIDE_CONFIG is set and from
// the env form otherwise, reporting problems to p. Only read sides without problems are returned,
// sorted by ID; the result is nil when there are none.
func (p *parser) readSides() []ReadSide {
	var out []ReadSide
	if path, ok := p.lookup(envReadSideConfig); ok {
		out = p.readSideFiles(path)
	} else {
		out = p.readSideEnv()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// readSideEnv parses the env form, COS_READ_SIDE_CONFIG__<SETTING>__<ID>. A variable with a
// blank value counts as unset; a read side exists when one of its variables is set.
func (p *parser) readSideEnv() []ReadSide {
	var names []string
	for name := range p.env {
		if strings.HasPrefix(name, envReadSidePrefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	ids := make(map[string]bool)
	for _, name := range names {
		parts := strings.Split(name, "__")
		if len(parts) != 3 {
			p.fail("%s: must have the form %s<SETTING>__<READSIDE_ID> (3 parts separated by __, got %d)",
				name, envReadSidePrefix, len(parts))
			continue
		}
		setting, id := parts[1], parts[2]
		if _, ok := readSideSettings[setting]; !ok {
			p.fail("%s: unknown setting %q (%s)", name, setting, settingsHelp)
			continue
		}
		if !readSideIDRE.MatchString(id) {
			p.fail("%s: %q is not a valid read side id (it must match %s)", name, id, readSideIDRE)
			continue
		}
		if _, ok := p.lookup(name); ok {
			ids[id] = true
		}
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)

	var out []ReadSide
	for _, id := range sorted {
		name := func(key string) string { return envReadSidePrefix + envSettingOf[key] + "__" + id }
		before := len(p.errs)
		r := newReadSide(id)
		p.str(name("host"), &r.Host)
		port := portUnset
		if _, ok := p.lookup(name("port")); ok {
			port = portInvalid
			if p.int(name("port"), &r.Port) {
				port = portGiven
			}
		}
		p.bool(name("useTls"), &r.UseTLS)
		p.str(name("tlsCaFile"), &r.TLS.CAFile)
		p.str(name("tlsCertFile"), &r.TLS.CertFile)
		p.str(name("tlsKeyFile"), &r.TLS.KeyFile)
		p.str(name("tlsServerName"), &r.TLS.ServerName)
		p.bool(name("autoStart"), &r.AutoStart)
		p.bool(name("enabled"), &r.Enabled)
		if v, ok := p.lookup(name("failurePolicy")); ok {
			if f, ok := parseFailurePolicy(v); ok {
				r.FailurePolicy = f
			} else {
				p.fail("%s: %q is not a failure policy (%s)", name("failurePolicy"), v, policyHelp)
			}
		}
		p.duration(name("timeout"), time.Millisecond, &r.Timeout)
		p.int(name("maxInFlight"), &r.MaxInFlight)
		var k checker
		r.check(&k, name, port)
		p.errs = append(p.errs, k.errs...)
		if len(p.errs) == before {
			out = append(out, r)
		}
	}
	return out
}

// readSideFiles parses the file form: path is a YAML file, or a folder whose *.yaml and *.yml
// files (not hidden, not in sub-folders) are read in name order.
func (p *parser) readSideFiles(path string) []ReadSide {
	info, err := os.Stat(path)
	if err != nil {
		p.fail("%s: %v", envReadSideConfig, err)
		return nil
	}
	files := []string{path}
	if info.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			p.fail("%s: %v", envReadSideConfig, err)
			return nil
		}
		files = files[:0]
		for _, e := range entries {
			n := e.Name()
			if strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
				continue
			}
			full := filepath.Join(path, n)
			// Stat follows symbolic links, such as those of a mounted Kubernetes ConfigMap.
			fi, err := os.Stat(full)
			if err != nil {
				p.fail("%s: %v", envReadSideConfig, err)
				continue
			}
			if !fi.IsDir() {
				files = append(files, full)
			}
		}
	}

	var out []ReadSide
	defined := make(map[string]string) // id -> "file, document n" where it was first defined
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			p.fail("%s: %v", envReadSideConfig, err)
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		for n := 1; ; n++ {
			where := fmt.Sprintf("%s: %s: document %d", envReadSideConfig, file, n)
			var doc readSideDoc
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			var te *yaml.TypeError
			if errors.As(err, &te) {
				// Unknown or repeated keys: the known keys were decoded, so check them too.
				for _, m := range te.Errors {
					p.fail("%s: %s", where, yamlMessage(m))
				}
			} else if err != nil {
				p.fail("%s: %v", where, err)
				break // a syntax error ends the stream
			}
			if doc.empty() {
				continue
			}
			before := len(p.errs)
			r, ok := p.readSideDocument(where, &doc)
			if !ok {
				continue
			}
			if first, dup := defined[r.ID]; dup {
				p.fail("%s: readSideId: %q is already defined in %s", where, r.ID, first)
				continue
			}
			defined[r.ID] = fmt.Sprintf("%s, document %d", file, n)
			if len(p.errs) == before && err == nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// readSideDoc is one YAML document of the file form. Nodes keep track of which keys are present.
type readSideDoc struct {
	ReadSideID    yaml.Node `yaml:"readSideId"`
	Host          yaml.Node `yaml:"host"`
	Port          yaml.Node `yaml:"port"`
	UseTLS        yaml.Node `yaml:"useTls"`
	AutoStart     yaml.Node `yaml:"autoStart"`
	Enabled       yaml.Node `yaml:"enabled"`
	FailurePolicy yaml.Node `yaml:"failurePolicy"`
	Timeout       yaml.Node `yaml:"timeout"`
	MaxInFlight   yaml.Node `yaml:"maxInFlight"`
	TLSCAFile     yaml.Node `yaml:"tlsCaFile"`
	TLSCertFile   yaml.Node `yaml:"tlsCertFile"`
	TLSKeyFile    yaml.Node `yaml:"tlsKeyFile"`
	TLSServerName yaml.Node `yaml:"tlsServerName"`
}

// empty reports whether no key was given (an empty document, null or {}).
func (d *readSideDoc) empty() bool {
	for _, n := range []*yaml.Node{
		&d.ReadSideID, &d.Host, &d.Port, &d.UseTLS, &d.AutoStart, &d.Enabled, &d.FailurePolicy, &d.Timeout, &d.MaxInFlight,
		&d.TLSCAFile, &d.TLSCertFile, &d.TLSKeyFile, &d.TLSServerName,
	} {
		if n.Kind != 0 {
			return false
		}
	}
	return true
}

// readSideDocument turns one non-empty document into a read side. ok is false when its id is
// missing or invalid, which leaves nothing to check duplicates against; other problems are
// reported to p and do not clear ok.
func (p *parser) readSideDocument(where string, doc *readSideDoc) (ReadSide, bool) {
	name := func(key string) string { return where + ": " + key }
	var k checker
	defer func() { p.errs = append(p.errs, k.errs...) }()

	var id string
	switch given, ok := decodeKey(&k, name("readSideId"), &doc.ReadSideID, &id); {
	case !ok:
		return ReadSide{}, false
	case !given:
		k.fail("%s: required", name("readSideId"))
		return ReadSide{}, false
	}
	if !readSideIDRE.MatchString(id) {
		checkReadSideID(&k, name("readSideId"), id)
		return ReadSide{}, false
	}

	r := newReadSide(id)
	decodeKey(&k, name("host"), &doc.Host, &r.Host)
	port := portUnset
	if given, ok := decodeKey(&k, name("port"), &doc.Port, &r.Port); given {
		port = portInvalid
		if ok {
			port = portGiven
		}
	}
	decodeKey(&k, name("useTls"), &doc.UseTLS, &r.UseTLS)
	decodeKey(&k, name("autoStart"), &doc.AutoStart, &r.AutoStart)
	decodeKey(&k, name("enabled"), &doc.Enabled, &r.Enabled)
	var policy string
	if given, ok := decodeKey(&k, name("failurePolicy"), &doc.FailurePolicy, &policy); given && ok {
		if f, ok := parseFailurePolicy(policy); ok {
			r.FailurePolicy = f
		} else {
			k.fail("%s: %q is not a failure policy (%s)", name("failurePolicy"), policy, policyHelp)
		}
	}
	var ms int64
	if given, ok := decodeKey(&k, name("timeout"), &doc.Timeout, &ms); given && ok {
		limit := int64(math.MaxInt64 / time.Millisecond)
		if ms > limit || ms < -limit {
			k.fail("%s: %d is out of range", name("timeout"), ms)
		} else {
			r.Timeout = time.Duration(ms) * time.Millisecond
		}
	}
	decodeKey(&k, name("maxInFlight"), &doc.MaxInFlight, &r.MaxInFlight)
	decodeKey(&k, name("tlsCaFile"), &doc.TLSCAFile, &r.TLS.CAFile)
	decodeKey(&k, name("tlsCertFile"), &doc.TLSCertFile, &r.TLS.CertFile)
	decodeKey(&k, name("tlsKeyFile"), &doc.TLSKeyFile, &r.TLS.KeyFile)
	decodeKey(&k, name("tlsServerName"), &doc.TLSServerName, &r.TLS.ServerName)
	r.check(&k, name, port)
	return r, true
}

// decodeKey decodes the value of one key into dst. given is false when the key is absent or
// null; ok is false when the value has the wrong type, which is reported as name: message.
func decodeKey(k *checker, name string, n *yaml.Node, dst any) (given, ok bool) {
	if n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return false, true
	}
	if err := n.Decode(dst); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, m := range te.Errors {
				k.fail("%s: %s", name, m)
			}
		} else {
			k.fail("%s: %v", name, err)
		}
		return true, false
	}
	return true, true
}

// unknownFieldRE matches yaml.v3's message for a key that is not a field of readSideDoc.
var unknownFieldRE = regexp.MustCompile(`^(line \d+): field (.*) not found in type \S+$`)

// yamlMessage rewords a yaml.v3 type error about a whole document.
func yamlMessage(m string) string {
	if s := unknownFieldRE.FindStringSubmatch(m); s != nil {
		return fmt.Sprintf("%s: unknown key %q (%s)", s[1], s[2], keysHelp)
	}
	return strings.ReplaceAll(m, "config.readSideDoc", "a read side mapping")
}
