// Package natsperm is the one place that says what each role may do on NATS: the publish and subscribe
// permissions of a gateway, a worker, a projector, a producer (a client of the NATS intake) and an
// operator's admin user, built from a layout.Layout so another COS_NATS_PREFIX gets its own names.
//
// The lists were found by running each role against a nats-server whose users had them, and are kept
// minimal: a subject is here because a role was refused without it. deploy/nats/permissions.conf and
// the Helm chart's files/nats-permissions.conf are generated from them (a test fails when they drift).
//
// What no role may do: publish an event (only workers may publish on the event subjects, only gateways
// the read barrier), delete, purge or update the event stream, or delete one of its messages. Producers
// reach nothing but the intake and the outcomes.
package natsperm

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cosnats/cosnats/pkg/layout"
)

// Role is a kind of NATS user.
type Role string

// The roles.
const (
	Gateway   Role = "gateway"
	Worker    Role = "worker"
	Projector Role = "projector"
	// Producer sends commands over NATS (docs/nats-producers.md): cos.process requests, cos.intake
	// JetStream publishes, outcomes on cos.outcomes.* and by direct get from COS_OUTCOMES.
	Producer Role = "producer"
	// Admin is an operator's user (nats CLI, cosctl, upgrades that edit the event stream): everything
	// in the account except deleting or purging the event stream or one of its messages.
	Admin Role = "admin"
)

// Roles are all roles, in the order the configuration lists them.
var Roles = []Role{Gateway, Worker, Projector, Producer, Admin}

// Rule is an allow and a deny list of subjects; deny wins.
type Rule struct {
	Allow []string
	Deny  []string
}

// Permissions are what one user may publish and subscribe to, shaped like nats-server's
// server.Permissions (Publish/Subscribe allow and deny lists; AllowResponses is a
// server.ResponsePermission{MaxMsgs: 1, Expires: ResponseExpiry}). AllowResponses lets the user answer
// requests it received (one reply each, within ResponseExpiry) without a publish permission on the
// reply subject.
type Permissions struct {
	Publish        Rule
	Subscribe      Rule
	AllowResponses bool
}

// ResponseExpiry bounds how long a request may wait for its reply under AllowResponses: above the
// longest command deadline COS accepts.
const ResponseExpiry = 10 * time.Minute

// names are the layout's names the lists use.
type names struct {
	l                                          layout.Layout
	events, state, readSides, intake, outcomes string // streams
	stateKV, readSidesKV                       string // bucket names
	intakeConsumer                             string
	root                                       string // first subject token
	api                                        string // "$JS.API."
}

func newNames(l layout.Layout) names {
	return names{
		l:              l,
		events:         l.EventStream(),
		state:          "KV_" + l.StateBucket(),
		readSides:      "KV_" + l.ReadSideBucket(),
		intake:         l.IntakeStream(),
		outcomes:       l.OutcomeStream(),
		stateKV:        l.StateBucket(),
		readSidesKV:    l.ReadSideBucket(),
		intakeConsumer: l.IntakeConsumer(),
		root:           strings.TrimSuffix(l.ProcessSubject(), ".process"),
		api:            "$JS.API.",
	}
}

// Forbidden are the event stream operations denied to every role: deleting, purging or updating the
// stream (an update could set limits that drop events), and deleting a message.
func Forbidden(l layout.Layout) []string {
	e := l.EventStream()
	return []string{
		"$JS.API.STREAM.DELETE." + e,
		"$JS.API.STREAM.PURGE." + e,
		"$JS.API.STREAM.MSG.DELETE." + e,
		"$JS.API.STREAM.UPDATE." + e,
	}
}

// For returns the permissions of role r under layout l.
func For(l layout.Layout, r Role) Permissions {
	n := newNames(l)
	api := n.api
	// Every role of ours binds the event stream at start (eventlog.Open: info, create when missing).
	// ($JS.API.INFO, the account's JetStream limits, is asked by nats.go when it creates a stream.)
	bindEvents := []string{api + "INFO", api + "STREAM.INFO." + n.events, api + "STREAM.CREATE." + n.events}
	// Reading events: by direct get (GetState after a barrier) and from the leader (workers, the
	// read-side manager).
	readEvents := []string{api + "DIRECT.GET." + n.events, api + "DIRECT.GET." + n.events + ".>", api + "STREAM.MSG.GET." + n.events}
	// The read-side status bucket (readside.OpenStatus): gateways and projectors.
	readSideStatus := []string{
		api + "STREAM.INFO." + n.readSides, api + "STREAM.CREATE." + n.readSides,
		api + "DIRECT.GET." + n.readSides + ".>",
		"$KV." + n.readSidesKV + ".>",
	}
	// The read-side consumers, managed by projectors (create, update, pause, reset) and by the manager
	// in the gateway (pause, resume, restart, skip).
	readSideConsumers := []string{
		api + "CONSUMER.INFO." + n.events + ".*",
		api + "CONSUMER.PAUSE." + n.events + ".*",
		api + "CONSUMER.RESET." + n.events + ".*",
	}
	inbox := "_INBOX.>"
	deny := Forbidden(l)
	notEvents := []string{l.AllEventSubjects()}
	notBarriers := []string{l.SyncSubject()}
	notOutcomes := []string{l.OutcomeLogSubjects()}

	var p Permissions
	switch r {
	case Gateway:
		p.Publish.Allow = concat(
			[]string{l.CommandSubjects(), l.AllWorkerCommandSubjects(), l.SyncSubject(), l.OutcomeLogSubjects(), l.UnsubscribeSubject(), l.ReadSideControlSubjects()},
			bindEvents, readEvents, readSideStatus, readSideConsumers,
			// The manager unpins a shard whose projector does not confirm an operation (readside.settle).
			[]string{api + "CONSUMER.UNPIN." + n.events + ".*"},
			// Live subscriptions: ordered consumers on the event stream, deleted when they end. The
			// manager lists the consumers to find a read side's shards.
			[]string{
				api + "CONSUMER.NAMES." + n.events,
				api + "CONSUMER.CREATE." + n.events + ".*.>",
				api + "CONSUMER.MSG.NEXT." + n.events + ".*",
				api + "CONSUMER.DELETE." + n.events + ".*",
			},
			// The intake (intake.Ensure, the pinned consumer, acks) and the outcomes.
			[]string{
				api + "STREAM.INFO." + n.intake, api + "STREAM.CREATE." + n.intake, api + "STREAM.UPDATE." + n.intake,
				api + "STREAM.INFO." + n.outcomes, api + "STREAM.CREATE." + n.outcomes, api + "STREAM.UPDATE." + n.outcomes,
				api + "CONSUMER.CREATE." + n.intake + "." + n.intakeConsumer + ".>",
				api + "CONSUMER.INFO." + n.intake + "." + n.intakeConsumer,
				api + "CONSUMER.RESET." + n.intake + "." + n.intakeConsumer,
				api + "CONSUMER.MSG.NEXT." + n.intake + "." + n.intakeConsumer,
				"$JS.ACK." + n.intake + ".>",
				// Whether a command was decided already: its outcome, read from the leader.
				api + "STREAM.MSG.GET." + n.outcomes,
				// Cos-Reply-To: outcomes are also sent to the reply subject a producer names, when it
				// is an inbox.
				inbox,
			},
		)
		p.Publish.Deny = concat(deny, notEvents)
		p.Subscribe.Allow = []string{inbox, l.ProcessSubject(), l.UnsubscribeSubject(), l.WorkerHeartbeats()}
		p.AllowResponses = true
	case Worker:
		p.Publish.Allow = concat(
			[]string{l.AllEventSubjects(), l.WorkerHeartbeats()},
			bindEvents, readEvents,
			// The snapshot bucket (statecache.Open) and its writes.
			[]string{
				api + "STREAM.INFO." + n.state, api + "STREAM.CREATE." + n.state,
				api + "DIRECT.GET." + n.state + ".>",
				"$KV." + n.stateKV + ".>",
			},
		)
		// Replies go to the gateways' inboxes. allow_responses alone is not enough: it is kept per
		// client connection, so a worker that reconnected (a dropped connection, a node killed) would be
		// refused the reply to a command it took before, and the caller would wait for UNKNOWN. Found by
		// the fault suite. A worker may forge events anyway; answering inboxes adds nothing to that.
		p.Publish.Allow = append(p.Publish.Allow, inbox)
		p.Publish.Deny = concat(deny, notBarriers, notOutcomes)
		p.Subscribe.Allow = []string{inbox, l.CommandSubjects(), l.AllWorkerCommandSubjects()}
		p.AllowResponses = true
	case Projector:
		p.Publish.Allow = concat(
			bindEvents, readSideStatus, readSideConsumers,
			[]string{
				api + "CONSUMER.CREATE." + n.events + ".*.>",
				api + "CONSUMER.MSG.NEXT." + n.events + ".*",
				"$JS.ACK." + n.events + ".>",
				// Confirmations of the manager's control requests, also after a reconnect (see Worker).
				inbox,
			},
		)
		p.Publish.Deny = concat(deny, notEvents, notBarriers, notOutcomes)
		p.Subscribe.Allow = []string{inbox, l.ReadSideControlSubjects()}
		p.AllowResponses = true
	case Producer:
		p.Publish.Allow = []string{
			l.ProcessSubject(), l.IntakeSubject(),
			api + "STREAM.INFO." + n.outcomes,
			api + "DIRECT.GET." + n.outcomes + ".>",
		}
		p.Publish.Deny = concat(deny, []string{l.EventSubjects(), l.CommandSubjects(), l.AllWorkerCommandSubjects(), l.WorkerHeartbeats(), l.OutcomeLogSubjects()})
		p.Subscribe.Allow = []string{inbox, l.OutcomeSubjects()}
	case Admin:
		p.Publish.Allow = []string{">"}
		p.Publish.Deny = deny[:3] // it may update the event stream (upgrades), never delete or purge it
		p.Subscribe.Allow = []string{">"}
	default:
		panic(fmt.Sprintf("natsperm: unknown role %q", r))
	}
	return p
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		for _, s := range l {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}
