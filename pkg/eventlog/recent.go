package eventlog

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Recent remembers the last commands of one entity: for each, a 72-bit hash of its command id and the
// stream sequence of its last event. It travels in the Cos-Recent-Commands header of every event, so
// "was this command id already applied?" is answered by the entity's last message alone, durably and
// atomically with the append. Newest first.
type Recent []RecentCommand

// RecentCommand is one remembered command.
type RecentCommand struct {
	Hash string
	Seq  uint64
}

// commandHash shortens a command id to 12 base64url characters (72 bits): collisions among the few
// commands remembered per entity are negligible, and the header stays small.
func commandHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}

// Lookup returns the sequence of the last event of command id, if it is remembered.
func (r Recent) Lookup(id string) (uint64, bool) {
	h := commandHash(id)
	for _, c := range r {
		if c.Hash == h {
			return c.Seq, true
		}
	}
	return 0, false
}

// Push returns a new list with command id (whose last event is at seq) in front, at most window long.
func (r Recent) Push(id string, seq uint64, window int) Recent {
	if window <= 0 || id == "" {
		return nil
	}
	n := min(len(r)+1, window)
	out := make(Recent, 0, n)
	out = append(out, RecentCommand{Hash: commandHash(id), Seq: seq})
	return append(out, r[:n-1]...)
}

// String is the header form: "hash@seq,hash@seq".
func (r Recent) String() string {
	var b strings.Builder
	for i, c := range r {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(c.Hash)
		b.WriteByte('@')
		b.WriteString(strconv.FormatUint(c.Seq, 10))
	}
	return b.String()
}

// ParseRecent reads the header form.
func ParseRecent(s string) (Recent, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	out := make(Recent, 0, len(parts))
	for _, p := range parts {
		h, seq, ok := strings.Cut(p, "@")
		n, err := strconv.ParseUint(seq, 10, 64)
		if !ok || err != nil || h == "" {
			return nil, fmt.Errorf("malformed recent-commands entry %q", p)
		}
		out = append(out, RecentCommand{Hash: h, Seq: n})
	}
	return out, nil
}
