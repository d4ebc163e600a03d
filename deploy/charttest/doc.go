// Package charttest tests the Helm chart in deploy/helm/cosnats without a helm binary or a cluster:
// Helm's own Go packages lint and render it, every rendered object is decoded strictly into the
// Kubernetes API types, the values schema is exercised with values it must reject, and the rendered
// Deployments are run for real — their command, environment and mounted ConfigMaps and Secrets become
// processes of the project's binaries against a local 3-node NATS cluster — to see a command go
// through the gateway and reach a read side.
//
// It is a module of its own so that the main module does not depend on Helm and Kubernetes:
//
//	cd deploy/charttest && go test ./...
package charttest
