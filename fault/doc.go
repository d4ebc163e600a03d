// Package fault is the fault suite: it runs the topology users run — a 3-node NATS cluster with three
// replicas, two gateways, two workers and two projectors as separate processes, a write handler and a
// read side — puts load on it with command ids and client retries, and injects what production brings:
// kill -9 of every role and of a NATS node, dropped connections, a partitioned node, a stream leader cut
// off from its peers while its clients still reach it, stream and consumer leader step-downs, a slow and
// a failing read side, a write handler that dies, everything starting at once, rolling restarts. After each fault it checks the guarantees: every acknowledged command applied
// exactly once and in order (a Porcupine model of each entity's history), revisions exact, no read-side
// delivery ahead of the revision before it, every revision delivered, no process exited by itself, every
// process ready again.
//
// The suite is its tests (go test ./fault). COS_FAULT_SOAK=30m repeats the faults for that long;
// COS_FAULT_RACE=1 builds the binaries with the race detector; COS_FAULT_KEEP=1 keeps the logs and
// stores of a run.
package fault
