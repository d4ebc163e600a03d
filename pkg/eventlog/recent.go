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

// RecentCommand is one remembered command. It holds no pointer, so the cached heads' lists (one per
// entity) cost the garbage collector nothing to scan.
type RecentCommand struct {
	Hash [hashBytes]byte // the first 72 bits of the SHA-256 of the command id
	Seq  uint64
}

// hashBytes is the size of a command hash: collisions among the few commands remembered per entity are
// negligible, and the header form stays small (12 base64url characters).
const hashBytes = 9

func commandHash(id string) [hashBytes]byte {
	sum := sha256.Sum256([]byte(id))
	var h [hashBytes]byte
	copy(h[:], sum[:hashBytes])
	return h
}

// Lookup returns the sequence of the last event of command id, if it is remembered.
func (r Recent) Lookup(id string) (uint64, bool) {
	if len(r) == 0 {
		return 0, false
	}
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

// String is the header form: "hash@seq,hash@seq", each hash in base64url without padding.
func (r Recent) String() string {
	if len(r) == 0 {
		return ""
	}
	var b strings.Builder
	b.Grow(len(r) * 24) // hash, '@', a sequence of up to 10 digits, ','
	var buf [32]byte
	for i, c := range r {
		e := buf[:0]
		if i > 0 {
			e = append(e, ',')
		}
		e = base64.RawURLEncoding.AppendEncode(e, c.Hash[:])
		e = append(e, '@')
		e = strconv.AppendUint(e, c.Seq, 10)
		b.Write(e)
	}
	return b.String()
}

// ParseRecent reads the header form.
func ParseRecent(s string) (Recent, error) {
	if s == "" {
		return nil, nil
	}
	out := make(Recent, 0, strings.Count(s, ",")+1)
	for p := range strings.SplitSeq(s, ",") {
		h, seq, ok := strings.Cut(p, "@")
		n, err := strconv.ParseUint(seq, 10, 64)
		var c RecentCommand
		if ok && err == nil && len(h) == base64.RawURLEncoding.EncodedLen(hashBytes) {
			var k int
			k, err = base64.RawURLEncoding.Decode(c.Hash[:], []byte(h))
			ok = k == hashBytes
		}
		if !ok || err != nil || len(h) != base64.RawURLEncoding.EncodedLen(hashBytes) {
			return nil, fmt.Errorf("malformed recent-commands entry %q", p)
		}
		c.Seq = n
		out = append(out, c)
	}
	return out, nil
}
