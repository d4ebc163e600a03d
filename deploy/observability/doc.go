// Package observability ships the operations kit of chief-of-state on NATS JetStream: Prometheus alert
// rules (alerts.yml, unit-tested by alerts_test.yml), a Grafana dashboard (dashboard.json), and the
// Prometheus, Grafana and OpenTelemetry collector configuration of the compose observability profile.
//
// The Go code only exists so the kit can be checked: the files are embedded, and MetricNames lists the
// cos_ metrics that the rules and the dashboard query, so a test that scrapes a running system can
// prove every one of them exists. The tests of this package check the files without a network, and
// run promtool when it is installed.
package observability
