// Package entity holds the pure rules about entity ids: validation, the COS shard formula and the
// injective encoding of an id into one NATS subject token (which is also a valid KV key).
package entity

import (
	"encoding/base64"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxIDBytes is the longest entity id accepted, in UTF-8 bytes. COS stored ids as VARCHAR(255); 1024
// bytes holds 255 characters of any script while keeping subjects far below NATS's ~4 KB limit.
const MaxIDBytes = 1024

// ErrEmptyID is the COS error for an empty entity id; its text is part of the contract.
var ErrEmptyID = errors.New("empty entity ID")

// ErrInvalidID reports an id that is not empty but still cannot be used.
var ErrInvalidID = errors.New("invalid entity ID")

// Validate reports whether id can name an entity.
func Validate(id string) error {
	switch {
	case id == "":
		return ErrEmptyID
	case len(id) > MaxIDBytes:
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidID, len(id), MaxIDBytes)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidID)
	}
	return nil
}

// JavaHashCode is Java's String.hashCode: a 31-multiplier rolling hash over UTF-16 code units with
// signed 32-bit wrap-around. COS derives its shard ("tag") from it, so we must too.
func JavaHashCode(s string) int32 {
	var h int32
	for _, r := range s {
		if r >= 0x10000 {
			hi, lo := utf16.EncodeRune(r)
			h = 31*h + hi
			h = 31*h + lo
			continue
		}
		if r == utf8.RuneError {
			// Invalid bytes never reach here after Validate; Java would see U+FFFD too.
			r = 0xFFFD
		}
		h = 31*h + r
	}
	return h
}

// javaShard is the COS formula verbatim: abs(h) % n with Java semantics. abs(MinInt32) stays negative
// and % keeps the dividend's sign, so the result is negative for ids hashing to MinInt32.
func javaShard(id string, n int) int {
	h := JavaHashCode(id)
	if h < 0 {
		h = -h // MinInt32 stays MinInt32, as in Java
	}
	return int(h % int32(n))
}

// Shard is the shard of an entity among n shards (n >= 1), as COS computed it. For the rare ids whose
// hash is MinInt32, COS produced a negative tag that no projection ever read; we use its absolute value
// instead so that every entity belongs to a shard in [0, n).
func Shard(id string, n int) int {
	s := javaShard(id, n)
	if s < 0 {
		return -s
	}
	return s
}

var rawURL = base64.RawURLEncoding

// plain reports whether id can be used as a token unchanged: [A-Za-z0-9_-]+.
func plain(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Token encodes an id as one subject token and KV key: ids made only of [A-Za-z0-9_-] pass through,
// anything else becomes "=" + base64url(id) without padding. '=' never occurs in a plain id, so the
// encoding is injective.
func Token(id string) string {
	if plain(id) {
		return id
	}
	return "=" + rawURL.EncodeToString([]byte(id))
}

// ParseToken inverts Token.
func ParseToken(tok string) (string, error) {
	if plain(tok) {
		return tok, nil
	}
	if len(tok) < 2 || tok[0] != '=' {
		return "", fmt.Errorf("%w: token %q", ErrInvalidID, tok)
	}
	b, err := rawURL.DecodeString(tok[1:])
	if err != nil {
		return "", fmt.Errorf("%w: token %q: %v", ErrInvalidID, tok, err)
	}
	id := string(b)
	if plain(id) { // a plain id is never encoded, so this token is not canonical
		return "", fmt.Errorf("%w: token %q is not canonical", ErrInvalidID, tok)
	}
	return id, nil
}

// Key is an entity id with its derived token and shard.
type Key struct {
	ID    string
	Token string
	Shard int
}

// NewKey validates id and derives its token and shard among numShards shards.
func NewKey(id string, numShards int) (Key, error) {
	if err := Validate(id); err != nil {
		return Key{}, err
	}
	if numShards < 1 {
		return Key{}, fmt.Errorf("number of shards must be at least 1, got %d", numShards)
	}
	return Key{ID: id, Token: Token(id), Shard: Shard(id, numShards)}, nil
}
