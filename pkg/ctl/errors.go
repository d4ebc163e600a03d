package ctl

import (
	"context"
	"errors"
	"strings"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// classify gives an error's exit code and the one line that reports it.
func classify(err error) (int, string) {
	var u *usageError
	if errors.As(err, &u) {
		return ExitUsage, oneLine(u.msg)
	}
	var e *exitError
	if errors.As(err, &e) {
		return e.code, oneLine(e.msg)
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return ExitUnavailable, "DEADLINE_EXCEEDED: " + oneLine(err.Error())
		}
		return ExitFailed, oneLine(err.Error())
	}
	return exitCode(st.Code()), statusLine(st)
}

// exitCode maps a gRPC code to cosctl's exit code (UNKNOWN of ProcessCommand is handled by process).
func exitCode(c codes.Code) int {
	switch c {
	case codes.OK:
		return ExitOK
	case codes.Unavailable, codes.DeadlineExceeded:
		return ExitUnavailable
	case codes.NotFound:
		return ExitNotFound
	default:
		return ExitFailed
	}
}

// statusLine is "CODE: message" plus the status details as compact JSON, on one line: a handler's
// BadRequest or ErrorInfo is often what explains a refusal.
func statusLine(st *status.Status) string {
	var b strings.Builder
	b.WriteString(codeName(st.Code()))
	b.WriteString(": ")
	b.WriteString(oneLine(st.Message()))
	details := st.Proto().GetDetails()
	if len(details) == 0 {
		return b.String()
	}
	b.WriteString(" details=[")
	for i, d := range details {
		if i > 0 {
			b.WriteString(",")
		}
		if j, err := (protojson.MarshalOptions{UseProtoNames: true}).Marshal(d); err == nil {
			b.Write(compactJSON(j))
		} else {
			b.WriteString(`{"@type":"` + d.GetTypeUrl() + `"}`)
		}
	}
	b.WriteString("]")
	return b.String()
}

// codeName is the canonical upper-case name of a code (NOT_FOUND), as in the gRPC specification and
// grpcurl's output; Go's String gives NotFound.
func codeName(c codes.Code) string {
	s := c.String()
	if c == codes.OK || strings.HasPrefix(s, "Code(") {
		return strings.ToUpper(s)
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// oneLine keeps a message on one line, whatever the server put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\r", " ")), " ")
}
