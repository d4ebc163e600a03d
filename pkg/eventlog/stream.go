package eventlog

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/pkg/layout"
)

// Stream metadata that fixes the layout: every process must agree with it, or entities would be looked
// up on other subjects than the ones their events are on.
const (
	MetaNumShards = "cos_num_shards" // COS_NUM_SHARDS the stream was created with
	MetaLayout    = "cos_layout"     // version of the subject and entity-token layout
	LayoutVersion = "1"
)

// StreamConfig is the event stream's configuration: no age or count limits (sequences must never be
// reused by an entity whose messages aged out), deletes and purges denied, atomic batches allowed.
// Direct gets are allowed: on a single replica they are the cheap leader read; on replicated streams any
// replica may answer one, so only reads that verify a barrier use them (see Current). Per-message TTLs
// are allowed for those barriers; events never carry one.
func StreamConfig(cfg Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               cfg.Layout.EventStream(),
		Description:        "chief-of-state events (EventWrapper per message, one subject per entity)",
		Subjects:           []string{cfg.Layout.EventSubjects()},
		Storage:            jetstream.FileStorage,
		Retention:          jetstream.LimitsPolicy,
		Replicas:           cfg.Replicas,
		MaxMsgs:            -1,
		MaxBytes:           -1,
		MaxAge:             0,
		MaxMsgsPerSubject:  -1,
		Discard:            jetstream.DiscardOld,
		DenyDelete:         true,
		DenyPurge:          true,
		AllowAtomicPublish: true,
		AllowDirect:        true,
		AllowMsgTTL:        true,
		Duplicates:         DedupWindow,
		Metadata:           map[string]string{MetaNumShards: strconv.Itoa(cfg.NumShards), MetaLayout: LayoutVersion},
	}
}

// compatible reports every setting of an existing stream that would break our guarantees or that
// disagrees with this process, naming the setting; the error wraps layout.ErrMismatch.
func compatible(got, want jetstream.StreamConfig) error {
	var errs []error
	bad := func(what string, have, need any) {
		errs = append(errs, fmt.Errorf("%s is %v, needs %v", what, have, need))
	}
	if len(got.Subjects) != 1 || got.Subjects[0] != want.Subjects[0] {
		bad("subjects", got.Subjects, want.Subjects)
	}
	if got.Retention != jetstream.LimitsPolicy {
		bad("retention", got.Retention, want.Retention)
	}
	if got.Storage != want.Storage {
		bad("storage", got.Storage, want.Storage)
	}
	if got.Replicas != want.Replicas {
		errs = append(errs, fmt.Errorf("replicas is %d, COS_NATS_REPLICAS says %d (to change the replica count, edit the stream first, e.g. `nats stream edit %s --replicas %d`, then set COS_NATS_REPLICAS to match; see RELIABILITY.md)",
			got.Replicas, want.Replicas, want.Name, want.Replicas))
	}
	if got.MaxAge != 0 {
		bad("max_age", got.MaxAge, "unlimited (0)")
	}
	if got.MaxMsgsPerSubject > 0 {
		bad("max_msgs_per_subject", got.MaxMsgsPerSubject, "unlimited (-1)")
	}
	if got.MaxMsgs > 0 || got.MaxBytes > 0 {
		bad("max_msgs/max_bytes", fmt.Sprint(got.MaxMsgs, "/", got.MaxBytes), "unlimited (-1)")
	}
	if !got.DenyDelete || !got.DenyPurge {
		bad("deny_delete/deny_purge", fmt.Sprint(got.DenyDelete, "/", got.DenyPurge), "true/true (events must never be removed)")
	}
	if got.Sealed {
		bad("sealed", true, false)
	}
	if got.Mirror != nil || len(got.Sources) > 0 {
		bad("mirror/sources", "set", "none (workers append to this stream)")
	}
	if !got.AllowAtomicPublish {
		bad("allow_atomic", false, true)
	}
	if got.Duplicates <= 0 {
		bad("duplicate_window", got.Duplicates, "a window (command ids are deduplicated in it)")
	}
	if got.SubjectDeleteMarkerTTL > 0 {
		bad("subject_delete_marker_ttl", got.SubjectDeleteMarkerTTL, "none (markers would be stored on event subjects)")
	}
	if n := got.Metadata[MetaNumShards]; n != "" && n != want.Metadata[MetaNumShards] {
		errs = append(errs, fmt.Errorf("it was created with COS_NUM_SHARDS=%s, this process has %s: every entity would be looked up on another subject (an empty history); set COS_NUM_SHARDS=%s",
			n, want.Metadata[MetaNumShards], n))
	}
	if v := got.Metadata[MetaLayout]; v != "" && v != LayoutVersion {
		bad("metadata "+MetaLayout, v, LayoutVersion+" (written by another version of chief-of-state)")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: stream %s exists with settings this process cannot use: %w", layout.ErrMismatch, want.Name, errors.Join(errs...))
	}
	return nil
}
