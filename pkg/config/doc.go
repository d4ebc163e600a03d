// Package config turns the process environment into a validated configuration for the
// chief-of-state service.
//
// The variables are those of the original chief-of-state (section 5 of the contract), plus the
// NATS settings that are new to this project (COS_NATS_*, COS_DATA_DIR), operations (COS_METRICS_ADDRESS,
// COS_SHUTDOWN_TIMEOUT) and a few tuning knobs (COS_CONFLICT_RETRIES, COS_MAX_COMMAND_BYTES,
// COS_IDEMPOTENCY_WINDOW, COS_STATE_CACHE_ENTRIES, COS_STATE_CACHE_BYTES, COS_WORKER_MAX_PENDING_BYTES,
// COS_WORKER_MAX_ENTITY_QUEUE).
//
// FromEnv parses an environment in os.Environ form, applies defaults and reports every problem
// at once (errors.Join), each message starting with the name of the offending variable. Variables
// of the Postgres/Akka/Kubernetes deployment of the original service are accepted, ignored and
// returned by name so that the caller can log one line about them.
//
// Read sides (Config.ReadSides) come from the YAML file or folder named by COS_READ_SIDE_CONFIG
// when it is set, and otherwise from the COS_READ_SIDE_CONFIG__<SETTING>__<READSIDE_ID>
// variables; Config.EnabledReadSides returns those to run.
//
// Settings that only one role needs are checked separately: the worker role, which calls the
// user's write-side handler, must also call WriteSide.Validate.
package config
