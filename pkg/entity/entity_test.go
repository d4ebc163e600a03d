package entity

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestShardVectors(t *testing.T) {
	cases := map[int][]int{
		9:  {5, 4, 3, 2, 1, 0, 8, 7, 6, 5},
		16: {7, 6, 5, 4, 3, 2, 1, 0, 15, 14},
	}
	for n, want := range cases {
		for i, w := range want {
			id := fmt.Sprintf("test-id-%d", i)
			if got := Shard(id, n); got != w {
				t.Errorf("Shard(%q, %d) = %d, want %d", id, n, got, w)
			}
		}
	}
}

func TestJavaHashCode(t *testing.T) {
	cases := map[string]int32{
		"":                   0,
		"a":                  97,
		"hello":              99162322,
		"polygenelubricants": math.MinInt32, // the well-known MinInt32 string
		"\U0001F600":         1772899,       // one astral rune = two UTF-16 code units (0xD83D, 0xDE00)
		"é":                  233,
	}
	for s, want := range cases {
		if got := JavaHashCode(s); got != want {
			t.Errorf("JavaHashCode(%q) = %d, want %d", s, got, want)
		}
	}
}

func TestShardOfMinInt32Hash(t *testing.T) {
	// Java gives -2 for 9 shards; we keep the entity inside [0, n).
	if got := javaShard("polygenelubricants", 9); got != -2 {
		t.Fatalf("javaShard = %d, want -2 (Java semantics)", got)
	}
	if got := Shard("polygenelubricants", 9); got != 2 {
		t.Fatalf("Shard = %d, want 2", got)
	}
}

func TestValidate(t *testing.T) {
	if err := Validate(""); !errors.Is(err, ErrEmptyID) || err.Error() != "empty entity ID" {
		t.Fatalf("empty id: %v", err)
	}
	if err := Validate(strings.Repeat("x", MaxIDBytes+1)); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("long id: %v", err)
	}
	if err := Validate("a\xffb"); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("invalid utf8: %v", err)
	}
	for _, id := range []string{"a", "a.b", "a b", "x/y", "*", ">", "ünïcödé", strings.Repeat("é", 255)} {
		if err := Validate(id); err != nil {
			t.Errorf("Validate(%q) = %v", id, err)
		}
	}
}

func TestTokenExamples(t *testing.T) {
	cases := map[string]string{
		"abc-DEF_123": "abc-DEF_123",
		"a.b":         "=YS5i",
		"*":           "=Kg",
		">":           "=Pg",
		"a b":         "=YSBi",
	}
	for id, want := range cases {
		if got := Token(id); got != want {
			t.Errorf("Token(%q) = %q, want %q", id, got, want)
		}
	}
	if _, err := ParseToken("=YWJj"); err == nil { // "abc" encoded: not canonical
		t.Error("non-canonical token accepted")
	}
	if _, err := ParseToken("a.b"); err == nil {
		t.Error("token with a dot accepted")
	}
}

var (
	subjectToken = regexp.MustCompile(`^[^.*> \t\r\n\f\v]+$`)
	kvKey        = regexp.MustCompile(`^[-/_=.A-Za-z0-9]+$`)
)

func checkToken(t *testing.T, id string) string {
	t.Helper()
	tok := Token(id)
	if !subjectToken.MatchString(tok) || !kvKey.MatchString(tok) || strings.HasPrefix(tok, ".") || strings.HasSuffix(tok, ".") {
		t.Fatalf("Token(%q) = %q is not a valid subject token and KV key", id, tok)
	}
	back, err := ParseToken(tok)
	if err != nil || back != id {
		t.Fatalf("ParseToken(Token(%q)) = %q, %v", id, back, err)
	}
	return tok
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"a", "a.b", "*", ">", " ", "=", "=YQ", "ünï", "a/b", "x\x00y"} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if Validate(a) != nil || Validate(b) != nil {
			return
		}
		ta, tb := checkToken(t, a), checkToken(t, b)
		if (a == b) != (ta == tb) {
			t.Fatalf("Token not injective: %q→%q, %q→%q", a, ta, b, tb)
		}
		if s := Shard(a, 9); s < 0 || s >= 9 {
			t.Fatalf("Shard(%q) = %d out of range", a, s)
		}
		if !utf8.ValidString(a) {
			t.Fatal("Validate accepted invalid UTF-8")
		}
	})
}

func BenchmarkShard(b *testing.B) {
	for i := 0; i < b.N; i++ {
		_ = Shard("account-0123456789", 9)
	}
}

func BenchmarkTokenPlain(b *testing.B) {
	for i := 0; i < b.N; i++ {
		_ = Token("account-0123456789")
	}
}

func BenchmarkTokenEncoded(b *testing.B) {
	for i := 0; i < b.N; i++ {
		_ = Token("tenant.42/account 0123456789")
	}
}
