package worker

import (
	"context"
	"go.opentelemetry.io/otel/trace"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
)

// job is one command to run, from NATS or from Dispatch.
type job struct {
	subject string
	req     *natspb.CommandRequest
	size    int64 // encoded size, counted against the pending-bytes bound until the job ends
	done    func(*natspb.CommandReply)
	parent  trace.SpanContext // the sender's trace context, when it sent one
}

// Refusals: a refused job was not started, so "not processed" is true.
var (
	errStopping    = status.Error(codes.Unavailable, "the worker is stopping; the command was not processed")
	errOverloaded  = status.Error(codes.Unavailable, "the worker is overloaded (it holds COS_WORKER_MAX_PENDING_BYTES of commands); the command was not processed")
	errEntityQueue = status.Error(codes.Unavailable, "too many commands are waiting for this entity (COS_WORKER_MAX_ENTITY_QUEUE); the command was not processed")
)

// limits bound what a serializer holds.
type limits struct {
	runs         int   // entity runs in progress at once (pool goroutines, and inline runs)
	pendingBytes int64 // encoded bytes of accepted jobs not yet finished (waiting or running)
	entityQueue  int   // jobs waiting behind the one in progress, per entity
}

// serializer runs the jobs of one entity (one command subject) one at a time, in arrival order, and
// different entities in parallel up to limits.runs. Ordering within an entity keeps a worker from racing
// itself on the expected-sequence check. Entity runs go to a pool of long-lived goroutines: a fresh
// goroutine per command would grow its stack through the gRPC and NATS calls every time.
//
// Submitting never blocks: a job that cannot start at once waits in memory, and what is held is bounded
// (the bytes of every accepted job not yet finished, and the jobs waiting per entity). Beyond the bounds
// a job is refused at once, so a NATS subscriber does not fall behind and commands are not dropped
// unanswered.
type serializer struct {
	run func(job)
	lim limits

	mu       sync.Mutex
	work     *sync.Cond // pool goroutines wait on it for ready runs
	quiet    *sync.Cond // stop waits on it for running jobs to end
	closed   bool       // refuses new jobs
	poolDone bool       // pool goroutines exit
	busy     map[string][]job
	ready    []job // first jobs of entity runs waiting for a pool goroutine
	pending  int64 // bytes of accepted jobs not yet finished
	running  int   // jobs running (pool and inline)
	spawned  int
	idle     int // pool goroutines waiting and not yet woken
	inline   int
	wg       sync.WaitGroup
}

func newSerializer(lim limits) *serializer {
	s := &serializer{lim: lim, busy: make(map[string][]job)}
	s.work = sync.NewCond(&s.mu)
	s.quiet = sync.NewCond(&s.mu)
	return s
}

// start sets what runs a job; submit may be called from then on.
func (s *serializer) start(run func(job)) {
	s.mu.Lock()
	s.run = run
	s.mu.Unlock()
}

// submit accepts a job, or returns the status error it is refused with (it did not run). With inline,
// a job whose entity is idle runs on the calling goroutine before submit returns (while fewer than
// limits.runs inline runs are in progress); jobs queued behind it go to the pool, so the caller only
// waits for its own job.
func (s *serializer) submit(j job, inline bool) error {
	s.mu.Lock()
	if s.closed || s.run == nil {
		s.mu.Unlock()
		return errStopping
	}
	if q, ok := s.busy[j.subject]; ok {
		switch {
		case len(q) >= s.lim.entityQueue:
			s.mu.Unlock()
			return errEntityQueue
		case s.pending+j.size > s.lim.pendingBytes:
			s.mu.Unlock()
			return errOverloaded
		}
		s.busy[j.subject] = append(q, j)
		s.pending += j.size
		s.mu.Unlock()
		return nil
	}
	if s.pending+j.size > s.lim.pendingBytes {
		s.mu.Unlock()
		return errOverloaded
	}
	s.busy[j.subject] = nil
	s.pending += j.size
	if inline && s.inline < s.lim.runs {
		s.inline++
		s.running++
		run := s.run
		s.mu.Unlock()
		run(j)
		s.mu.Lock()
		s.inline--
		s.running--
		s.pending -= j.size
		if next, more := s.next(j.subject); more {
			s.makeReady(next)
		}
		s.quietCheck()
		s.mu.Unlock()
		return nil
	}
	s.makeReady(j)
	s.mu.Unlock()
	return nil
}

// makeReady queues the first job of an entity run for the pool, waking an idle goroutine or starting
// one while fewer than limits.runs exist (s.mu held). Its bytes are already counted.
func (s *serializer) makeReady(j job) {
	s.ready = append(s.ready, j)
	switch {
	case s.idle > 0:
		s.idle--
		s.work.Signal()
	case s.spawned < s.lim.runs:
		s.spawned++
		s.wg.Add(1)
		go s.worker()
	}
}

// next pops the job queued behind the one that just ran for subject, or forgets the subject when none
// is (s.mu held).
func (s *serializer) next(subject string) (job, bool) {
	q := s.busy[subject]
	if len(q) == 0 {
		delete(s.busy, subject)
		return job{}, false
	}
	j := q[0]
	q[0] = job{}
	s.busy[subject] = q[1:]
	return j, true
}

// worker runs entity runs until the pool is closed.
func (s *serializer) worker() {
	defer s.wg.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for len(s.ready) == 0 && !s.poolDone {
			s.idle++
			s.work.Wait()
		}
		if len(s.ready) == 0 {
			return
		}
		j := s.ready[0]
		s.ready[0] = job{}
		s.ready = s.ready[1:]
		// Run the entity's jobs one after the other.
		for {
			s.running++
			run := s.run
			s.mu.Unlock()
			run(j)
			s.mu.Lock()
			s.running--
			s.pending -= j.size
			next, more := s.next(j.subject)
			if !more {
				break
			}
			j = next
		}
		s.quietCheck()
	}
}

// quietCheck wakes a stop waiting for jobs to finish (s.mu held).
func (s *serializer) quietCheck() {
	if s.closed {
		s.quiet.Broadcast()
	}
}

// stop refuses new jobs and lets every accepted one finish. When ctx ends first, jobs not started yet
// are handed to refuse (nothing was done) and only the running ones are waited for: a running command
// may have an append in flight, and its caller must hear how it ended.
func (s *serializer) stop(ctx context.Context, refuse func(job)) {
	s.mu.Lock()
	s.closed = true
	stopWaking := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.quiet.Broadcast()
		s.mu.Unlock()
	})
	defer stopWaking()
	for s.running > 0 || len(s.ready) > 0 || len(s.busy) > 0 {
		if ctx.Err() != nil {
			left := s.ready
			s.ready = nil
			for subject, q := range s.busy {
				left = append(left, q...)
				s.busy[subject] = nil
			}
			for _, j := range left {
				s.pending -= j.size
			}
			s.mu.Unlock()
			for _, j := range left {
				refuse(j)
			}
			s.mu.Lock()
			for s.running > 0 {
				s.quiet.Wait()
			}
			break
		}
		s.quiet.Wait()
	}
	s.poolDone = true
	s.work.Broadcast()
	s.mu.Unlock()
	s.wg.Wait()
}
