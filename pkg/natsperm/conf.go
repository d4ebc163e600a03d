package natsperm

import (
	"strconv"
	"strings"

	"github.com/cosnats/cosnats/pkg/layout"
)

// Account is the NATS account the users of Conf belong to.
const Account = "COS"

// User is the NATS user name of a role: cos-gateway, cos-worker, …
func User(r Role) string { return "cos-" + string(r) }

// PasswordEnv is the environment variable nats-server reads the role's password from in Conf
// ($COS_GATEWAY_PASSWORD, …).
func PasswordEnv(r Role) string { return "COS_" + strings.ToUpper(string(r)) + "_PASSWORD" }

// Conf renders the accounts block of a nats-server configuration: the account COS with JetStream and one
// user per role, each with its permissions and its password taken from the environment variable
// PasswordEnv(role) when the server loads the file. Include it from nats.conf (`include
// permissions.conf`); nats-server must run with JetStream.
func Conf(l layout.Layout) string {
	var b strings.Builder
	w := func(indent int, s string) {
		b.WriteString(strings.Repeat("  ", indent))
		b.WriteString(s)
		b.WriteByte('\n')
	}
	list := func(indent int, key string, subjects []string) {
		if len(subjects) == 0 {
			return
		}
		w(indent, key+": [")
		for _, s := range subjects {
			w(indent+1, strconv.Quote(s))
		}
		w(indent, "]")
	}
	rule := func(indent int, key string, r Rule) {
		w(indent, key+": {")
		list(indent+1, "allow", r.Allow)
		list(indent+1, "deny", r.Deny)
		w(indent, "}")
	}
	w(0, "accounts {")
	w(1, Account+" {")
	w(2, "jetstream: enabled")
	w(2, "users: [")
	for _, r := range Roles {
		p := For(l, r)
		w(3, "# "+summary[r])
		w(3, "{")
		w(4, "user: "+strconv.Quote(User(r)))
		w(4, "password: $"+PasswordEnv(r))
		w(4, "permissions: {")
		rule(5, "publish", p.Publish)
		rule(5, "subscribe", p.Subscribe)
		if p.AllowResponses {
			w(5, "allow_responses: { max: 1, expires: \""+ResponseExpiry.String()+"\" }")
		}
		w(4, "}")
		w(3, "}")
	}
	w(2, "]")
	w(1, "}")
	w(0, "}")
	return b.String()
}

var summary = map[Role]string{
	Gateway:   "Gateways: send commands to workers, read the event stream, publish read barriers, run live subscriptions, the read-side manager and the NATS intake.",
	Worker:    "Workers: take commands (queue group), append events, write snapshots.",
	Projector: "Projectors: create and pull their read-side consumers, ack deliveries, record read-side failures.",
	Producer:  "Producers: send commands to cos.process and cos.intake, read outcomes. Nothing else.",
	Admin:     "Operators: the nats CLI and cosctl; everything except deleting or purging the event stream.",
}

// ExampleConf is deploy/nats/permissions.conf: Conf for the default layout, with how to use it.
func ExampleConf() string {
	return `# The NATS users of chief-of-state on NATS and what each may do: least privilege per role.
# GENERATED from pkg/natsperm (go test ./pkg/natsperm -run TestGeneratedFiles -update); do not edit.
# Subjects are for COS_NATS_PREFIX=COS; for another prefix generate them with natsperm.Conf.
#
# Use: include it from nats.conf (JetStream on), give each process its role's user, e.g.
#   COS_NATS_URL=nats://cos-gateway:<password>@nats:4222
# and set the passwords in the environment of nats-server (COS_GATEWAY_PASSWORD, COS_WORKER_PASSWORD,
# COS_PROJECTOR_PASSWORD, COS_PRODUCER_PASSWORD, COS_ADMIN_PASSWORD), or replace each $VARIABLE by a
# bcrypt hash (nats server passwd). A process running several roles needs the union of their lists.
#
# Every process creates the streams and buckets it binds when they are missing; none may update,
# purge or delete the event stream: a stream made before read barriers (no direct gets / message TTLs
# / cos_num_shards metadata) must be brought up to date once by a process using the admin user.
# Outcomes sent to Cos-Reply-To reach only _INBOX.> subjects.
` + Conf(layout.Default())
}

// TemplatePrefix is the COS_NATS_PREFIX the Helm chart's copy is generated with: the chart replaces it
// (and its lower case) with layout.natsPrefix.
const TemplatePrefix = "CHARTPFX"

// ChartConf is the Helm chart's files/nats-permissions.conf: Conf for TemplatePrefix.
func ChartConf() string {
	l, err := layout.New(TemplatePrefix)
	if err != nil {
		panic(err)
	}
	return "# GENERATED from pkg/natsperm (TestGeneratedFiles -update); " + TemplatePrefix + " and its lower case are replaced by\n" +
		"# layout.natsPrefix when rendered (templates/nats-permissions-configmap.yaml). See deploy/nats/permissions.conf.\n" + Conf(l)
}
