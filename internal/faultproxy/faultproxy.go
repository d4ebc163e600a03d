// Package faultproxy is a TCP proxy for fault tests: it sits between NATS clients (or servers on a
// route) and a NATS server and can drop every connection, blackhole traffic (a partition: connections
// stay open, nothing passes), or silently drop chosen messages the server sends to a client (a lost
// delivery, as a slow-consumer drop or a broken connection would lose it).
package faultproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// Proxy forwards connections from its listener to Target.
type Proxy struct {
	Target string

	lis net.Listener

	mu        sync.Mutex
	conns     map[*pair]struct{}
	blackhole bool
	unblocked chan struct{} // closed while not blackholed
	dropNext  map[string]int
	closed    bool

	dropped atomic.Int64
	wg      sync.WaitGroup
}

type pair struct{ client, server net.Conn }

// Start listens on 127.0.0.1 (listen "" picks a free port) and forwards to target.
func Start(listen, target string) (*Proxy, error) {
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{Target: target, lis: lis, conns: map[*pair]struct{}{}, unblocked: make(chan struct{}), dropNext: map[string]int{}}
	close(p.unblocked)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listen address (host:port).
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// URL is the proxy's address as a NATS URL.
func (p *Proxy) URL() string { return "nats://" + p.Addr() }

// Close stops the proxy and every connection through it.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	if p.blackhole {
		p.blackhole = false
		close(p.unblocked)
	}
	p.mu.Unlock()
	_ = p.lis.Close()
	p.DropConnections()
	p.wg.Wait()
}

// DropConnections closes every connection through the proxy; new ones are accepted as before.
func (p *Proxy) DropConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.client.Close()
		_ = c.server.Close()
	}
}

// Blackhole stops all traffic through the proxy without closing anything, as a network partition
// does; new connections are accepted and hang. Heal lets traffic flow again.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.blackhole {
		p.blackhole = true
		p.unblocked = make(chan struct{})
	}
}

// Heal ends a blackhole.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blackhole {
		p.blackhole = false
		close(p.unblocked)
	}
}

// DropNext silently drops the next n messages the server sends to a client on subject (the message's
// own subject, e.g. a stream subject of a JetStream delivery).
func (p *Proxy) DropNext(subject string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropNext[subject] += n
}

// Dropped is the number of messages dropped by DropNext so far.
func (p *Proxy) Dropped() int64 { return p.dropped.Load() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.Target)
		if err != nil {
			_ = c.Close()
			continue
		}
		pr := &pair{client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = s.Close()
			return
		}
		p.conns[pr] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			p.copy(s, c) // client → server, verbatim
			p.end(pr)
		}()
		go func() {
			defer p.wg.Done()
			p.copyFromServer(c, s) // server → client, messages may be dropped
			p.end(pr)
		}()
	}
}

func (p *Proxy) end(pr *pair) {
	_ = pr.client.Close()
	_ = pr.server.Close()
	p.mu.Lock()
	delete(p.conns, pr)
	p.mu.Unlock()
}

// gate blocks while blackholed; it reports false once the proxy is closed.
func (p *Proxy) gate() bool {
	p.mu.Lock()
	ch, closed := p.unblocked, p.closed
	p.mu.Unlock()
	<-ch
	return !closed
}

func (p *Proxy) copy(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// copyFromServer forwards the server's protocol line by line so that whole MSG/HMSG frames can be
// dropped.
func (p *Proxy) copyFromServer(dst io.Writer, src io.Reader) {
	r := bufio.NewReaderSize(src, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
		frame := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) { // a very long line
			line, err = r.ReadSlice('\n')
			frame = append(frame, line...)
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return
			}
		}
		subject, size, isMsg := parseMsgLine(frame)
		if isMsg {
			body := make([]byte, size+2) // payload and its CRLF
			if _, err := io.ReadFull(r, body); err != nil {
				return
			}
			if p.takeDrop(subject) {
				p.dropped.Add(1)
				continue
			}
			frame = append(frame, body...)
		}
		if !p.gate() {
			return
		}
		if _, err := dst.Write(frame); err != nil {
			return
		}
	}
}

func (p *Proxy) takeDrop(subject string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dropNext[subject] > 0 {
		p.dropNext[subject]--
		return true
	}
	return false
}

// parseMsgLine reads "MSG <subject> <sid> [reply] <size>" or "HMSG <subject> <sid> [reply] <hdr> <total>".
func parseMsgLine(line []byte) (subject string, size int, ok bool) {
	fields := bytes.Fields(line)
	if len(fields) < 4 {
		return "", 0, false
	}
	switch string(fields[0]) {
	case "MSG", "msg", "HMSG", "hmsg":
	default:
		return "", 0, false
	}
	n, err := strconv.Atoi(string(fields[len(fields)-1]))
	if err != nil {
		return "", 0, false
	}
	return string(fields[1]), n, true
}
