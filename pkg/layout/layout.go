// Package layout names everything this project creates or uses on NATS: streams, buckets, subjects
// and queue groups. One place, so the README's "NATS layout" and the code cannot drift apart.
package layout

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/cosnats/cosnats/pkg/entity"
)

// ErrMismatch marks a stream, bucket or consumer that exists with settings this process cannot use
// (another replica count, another shard count, limits that would lose events, ...). It is a
// configuration error: the process refuses to start rather than run against it.
var ErrMismatch = errors.New("existing NATS object disagrees with this configuration")

// DefaultPrefix is the default name prefix.
const DefaultPrefix = "COS"

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Layout derives names from one prefix: with "COS", the event stream is COS_EVENTS, the snapshot bucket
// COS_STATE, event subjects cos.events.<shard>.<token> and command subjects cos.cmd.<shard>.<token>.
type Layout struct {
	prefix string // stream and bucket names
	root   string // first subject token
}

// New validates prefix and returns its layout.
func New(prefix string) (Layout, error) {
	if !prefixRE.MatchString(prefix) {
		return Layout{}, fmt.Errorf("layout prefix %q must match %s", prefix, prefixRE)
	}
	return Layout{prefix: prefix, root: strings.ToLower(prefix)}, nil
}

// Default is the layout for DefaultPrefix.
func Default() Layout {
	l, _ := New(DefaultPrefix)
	return l
}

// EventStream is the name of the event stream.
func (l Layout) EventStream() string { return l.prefix + "_EVENTS" }

// StateBucket is the name of the KV bucket holding periodic snapshots.
func (l Layout) StateBucket() string { return l.prefix + "_STATE" }

// EventSubjects is the event stream's subject filter.
func (l Layout) EventSubjects() string { return l.root + ".events.>" }

// AllEventSubjects matches every entity's event subject (and not SyncSubject).
func (l Layout) AllEventSubjects() string { return l.root + ".events.*.*" }

// SyncSubject is where gateways publish read barriers: short-lived messages (a per-message TTL) in the
// event stream that prove, once stored, that a replica has everything acknowledged before them. It has
// fewer tokens than an event subject, so no event filter matches it.
func (l Layout) SyncSubject() string { return l.root + ".events.sync" }

// EventSubject is the subject holding one entity's events.
func (l Layout) EventSubject(k entity.Key) string {
	return l.root + ".events." + strconv.Itoa(k.Shard) + "." + k.Token
}

// ShardEventSubjects filters the events of one shard (a read side consumes one shard per consumer).
func (l Layout) ShardEventSubjects(shard int) string {
	return l.root + ".events." + strconv.Itoa(shard) + ".*"
}

// CommandSubject is the subject a command for one entity is sent on.
func (l Layout) CommandSubject(k entity.Key) string {
	return l.root + ".cmd." + strconv.Itoa(k.Shard) + "." + k.Token
}

// ParseEventSubject splits an event subject into its shard and entity token.
func (l Layout) ParseEventSubject(subject string) (shard int, token string, ok bool) {
	rest, found := strings.CutPrefix(subject, l.root+".events.")
	if !found {
		return 0, "", false
	}
	s, token, found := strings.Cut(rest, ".")
	n, err := strconv.Atoi(s)
	if !found || err != nil || n < 0 || token == "" || strings.Contains(token, ".") {
		return 0, "", false
	}
	return n, token, true
}

// ReadSideControlSubject is where the read-side manager tells the projector that owns a shard that an
// operator paused, restarted or skipped it, so deliveries it already fetched are not started.
func (l Layout) ReadSideControlSubject(readSideID string, shard int) string {
	return l.root + ".ctl.readside." + readSideID + "." + strconv.Itoa(shard)
}

// ReadSideControlSubjects matches every read-side control subject; projectors subscribe to it.
func (l Layout) ReadSideControlSubjects() string { return l.root + ".ctl.readside.*.*" }

// ParseReadSideConsumer returns the read side and shard of a consumer named by ReadSideConsumer.
func (l Layout) ParseReadSideConsumer(name string) (readSideID string, shard int, ok bool) {
	rest, found := strings.CutPrefix(name, l.prefix+"_RS_")
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '_')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil || n < 0 || strconv.Itoa(n) != rest[i+1:] {
		return "", 0, false
	}
	return rest[:i], n, true
}

// CommandSubjects matches every command subject; workers subscribe to it.
func (l Layout) CommandSubjects() string { return l.root + ".cmd.*.*" }

// WorkerQueue is the queue group shared by all workers, so each command reaches exactly one.
func (l Layout) WorkerQueue() string { return l.root + "-workers" }

// WorkerCommandSubjects matches the command subjects of one worker: a gateway that knows which worker
// owns an entity (package placement) sends its commands there rather than to the queue group, so the
// worker's state cache stays current. id must be a single subject token.
func (l Layout) WorkerCommandSubjects(id string) string { return l.root + ".wcmd." + id + ".*.*" }

// AllWorkerCommandSubjects matches every worker's command subjects (permissions).
func (l Layout) AllWorkerCommandSubjects() string { return l.root + ".wcmd.*.*.*" }

// WorkerCommandSubject is the subject a command on commandSubject (CommandSubject) takes to worker id.
func (l Layout) WorkerCommandSubject(id, commandSubject string) string {
	return l.root + ".wcmd." + id + "." + strings.TrimPrefix(commandSubject, l.root+".cmd.")
}

// CommandSubjectOf maps a subject a worker received (its own WorkerCommandSubjects or
// CommandSubjects) to the entity's command subject; other subjects come back unchanged.
func (l Layout) CommandSubjectOf(subject string) string {
	rest, ok := strings.CutPrefix(subject, l.root+".wcmd.")
	if !ok {
		return subject
	}
	_, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return subject
	}
	return l.root + ".cmd." + rest
}

// WorkerHeartbeatSubject is where worker id says it lives (package placement).
func (l Layout) WorkerHeartbeatSubject(id string) string { return l.root + ".workers." + id }

// WorkerHeartbeats matches every worker's heartbeat subject; gateways subscribe to it.
func (l Layout) WorkerHeartbeats() string { return l.root + ".workers.*" }

// ParseWorkerHeartbeat returns the worker id of a heartbeat subject.
func (l Layout) ParseWorkerHeartbeat(subject string) (id string, ok bool) {
	id, ok = strings.CutPrefix(subject, l.root+".workers.")
	if !ok || !workerIDRE.MatchString(id) {
		return "", false
	}
	return id, true
}

var workerIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidWorkerID reports whether id can name a worker in subjects.
func ValidWorkerID(id string) bool { return workerIDRE.MatchString(id) }

// KeySubjectMatches reports whether a command for k arrived on k's own subject. Commands for one entity
// must share a subject, or per-entity ordering at the workers would not hold.
func (l Layout) KeySubjectMatches(k entity.Key, subject string) bool {
	return subject == l.CommandSubject(k)
}

// ReadSideBucket is the KV bucket holding each read-side shard's failure state.
func (l Layout) ReadSideBucket() string { return l.prefix + "_READSIDES" }

// ReadSideConsumer is the durable consumer of one read side's shard. The shard number is the last
// "_"-separated part, so distinct (id, shard) pairs never share a name.
func (l Layout) ReadSideConsumer(readSideID string, shard int) string {
	return l.prefix + "_RS_" + readSideID + "_" + strconv.Itoa(shard)
}

// ReadSideStateKey is the key of one read-side shard in ReadSideBucket.
func (l Layout) ReadSideStateKey(readSideID string, shard int) string {
	return readSideID + "." + strconv.Itoa(shard)
}

// ReadSideRestartKey is the key in ReadSideBucket of one shard's last restart (its replay's size).
func (l Layout) ReadSideRestartKey(readSideID string, shard int) string {
	return l.ReadSideStateKey(readSideID, shard) + ".restart"
}

// ProjectorGroup is the priority group projector replicas pull with; the server pins one of them.
const ProjectorGroup = "projectors"

// ProcessSubject is the synchronous intake: a NATS request there runs one command, like ProcessCommand.
// Gateways answer it (queue group GatewayQueue).
func (l Layout) ProcessSubject() string { return l.root + ".process" }

// GatewayQueue is the queue group of the gateways on ProcessSubject.
func (l Layout) GatewayQueue() string { return l.root + "-gateways" }

// IntakeStream is the asynchronous intake: a work-queue stream producers publish commands to.
func (l Layout) IntakeStream() string { return l.prefix + "_INTAKE" }

// IntakeSubject is the one subject of IntakeStream.
func (l Layout) IntakeSubject() string { return l.root + ".intake" }

// IntakeConsumer is the durable consumer the gateways take intake commands with (one pinned at a time).
func (l Layout) IntakeConsumer() string { return l.prefix + "_INTAKE" }

// OutcomeStream keeps the outcome of every intake command for a while.
func (l Layout) OutcomeStream() string { return l.prefix + "_OUTCOMES" }

// OutcomeSubjects matches every outcome subject.
func (l Layout) OutcomeSubjects() string { return l.root + ".outcomes.*" }

// OutcomeSubject is where producers hear the outcome of the intake command with this id: the id
// itself when it is a plain token ([A-Za-z0-9_-]), else its "=" + base64url form (entity.Token). The
// outcome stream republishes each outcome it stores there, so a duplicate is never heard.
func (l Layout) OutcomeSubject(commandID string) string {
	return l.root + ".outcomes." + entity.Token(commandID)
}

// OutcomeLogSubjects matches the subjects outcomes are stored on (gateways publish there).
func (l Layout) OutcomeLogSubjects() string { return l.root + ".outcome-log.*" }

// OutcomeLogSubject is where the outcome of the intake command with this id is stored.
func (l Layout) OutcomeLogSubject(commandID string) string {
	return l.root + ".outcome-log." + entity.Token(commandID)
}

// OutcomeRepublish maps OutcomeLogSubjects to OutcomeSubjects (a stream republish destination).
func (l Layout) OutcomeRepublish() string { return l.root + ".outcomes.{{wildcard(1)}}" }

// UnsubscribeSubject is where a gateway that receives Unsubscribe/UnsubscribeAll tells every gateway to
// end the live subscription with that id (it may be served by another one).
func (l Layout) UnsubscribeSubject() string { return l.root + ".ctl.unsubscribe" }

// IntakeGroup is the priority group gateways pull the intake with; the server pins one of them.
const IntakeGroup = "gateways"
