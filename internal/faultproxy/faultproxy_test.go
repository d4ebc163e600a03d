package faultproxy

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// server writes the given protocol to every connection and then echoes what it reads.
func server(t *testing.T, proto string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, proto)
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return lis.Addr().String()
}

func dial(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

func line(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	s, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimRight(s, "\r\n")
}

// The chosen message is dropped whole; the others, and everything else, pass.
func TestDropNext(t *testing.T) {
	addr := server(t, "INFO {}\r\nMSG a.b 1 5\r\nfirst\r\nHMSG a.b 1 rep 12 17\r\nNATS/1.0\r\n\r\nsecond\r\nMSG c 2 5\r\nthird\r\nPING\r\n")
	p, err := Start("", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.DropNext("a.b", 1)
	_, r := dial(t, p)
	var got []string
	for range 7 {
		got = append(got, line(t, r))
	}
	want := []string{"INFO {}", "HMSG a.b 1 rep 12 17", "NATS/1.0", "", "second", "MSG c 2 5", "third"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
	if p.Dropped() != 1 {
		t.Fatalf("dropped %d", p.Dropped())
	}
}

// A blackhole holds traffic without closing the connection; healing lets it through.
func TestBlackholeAndHeal(t *testing.T) {
	p, err := Start("", server(t, "INFO {}\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, r := dial(t, p)
	if got := line(t, r); got != "INFO {}" {
		t.Fatalf("got %q", got)
	}
	p.Blackhole()
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("traffic passed a blackhole")
	}
	_ = c.SetReadDeadline(time.Time{})
	p.Heal()
	if got := line(t, r); got != "PING" {
		t.Fatalf("after healing: %q", got)
	}
	p.DropConnections()
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("the connection survived DropConnections")
	}
}
