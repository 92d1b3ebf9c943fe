package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
)

// Event names of GET /v1/events.
const (
	EventRegistered = "registered" // a runner instance appeared
	EventDeparted   = "departed"   // an instance left or its record expired
	EventJob        = "job"        // a job's result record changed
)

// event is one Server-Sent Event.
type event struct {
	name string
	data []byte
}

// instanceEvent is the data of registered and departed events.
type instanceEvent struct {
	Algorithm string `json:"algorithm"`
	Instance  string `json:"instance"`
	Version   string `json:"version"`
}

// jobEvent is the data of a job event.
type jobEvent struct {
	JobID      string          `json:"job_id"`
	Algorithm  string          `json:"algorithm"`
	Status     string          `json:"status"`
	Attempts   int             `json:"attempts"`
	Error      *protocol.Error `json:"error,omitempty"`
	DurationMS *float64        `json:"duration_ms,omitempty"`
	// Progress is set on a running job's event: how far it got.
	Progress *jobs.Progress `json:"progress,omitempty"`
}

// subscriberBuffer is how many events a slow client may lag behind before
// it is cut off (its EventSource reconnects and reloads).
const subscriberBuffer = 256

// hub fans the discovery changes and result records out to the event
// streams: one discovery view and one results watcher for all clients.
type hub struct {
	g    *Gateway
	mu   sync.Mutex
	subs map[chan event]struct{}

	// discoveryReady is closed once the discovery view's first snapshot is
	// taken, resultsReady once the results watcher first runs (or gave
	// up). Until both, a change could be missed, so streams wait for them.
	discoveryReady, resultsReady chan struct{}
	discoveryOnce, resultsOnce   sync.Once
}

func newHub(g *Gateway) *hub {
	return &hub{g: g, subs: map[chan event]struct{}{}, discoveryReady: make(chan struct{}), resultsReady: make(chan struct{})}
}

// ready waits until every change from now on becomes an event.
func (h *hub) ready(ctx context.Context) error {
	for _, c := range []chan struct{}{h.discoveryReady, h.resultsReady} {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c:
		}
	}
	return nil
}

func (h *hub) subscribe() (<-chan event, func()) {
	ch := make(chan event, subscriberBuffer)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
		h.mu.Unlock()
	}
}

func (h *hub) broadcast(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	ev := event{name: name, data: b}
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- ev:
		default:
			delete(h.subs, ch)
			close(ch)
		}
	}
}

func (h *hub) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); h.watchDiscovery(ctx) }()
	go func() { defer wg.Done(); h.watchResults(ctx) }()
	wg.Wait()
	h.mu.Lock()
	for ch := range h.subs {
		delete(h.subs, ch)
		close(ch)
	}
	h.mu.Unlock()
}

// watchDiscovery turns each change of the discovery view into registered
// and departed events.
func (h *hub) watchDiscovery(ctx context.Context) {
	changed := h.g.cache.Changed()
	select {
	case <-ctx.Done():
		return
	case <-h.g.cache.Ready():
	}
	prev := map[string]discovery.Registration{}
	for _, r := range h.g.cache.All() {
		prev[r.Key()] = r
	}
	h.discoveryOnce.Do(func() { close(h.discoveryReady) })
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		changed = h.g.cache.Changed()
		now := map[string]discovery.Registration{}
		for _, r := range h.g.cache.All() {
			now[r.Key()] = r
			if _, ok := prev[r.Key()]; !ok {
				h.broadcast(EventRegistered, instanceEvent{r.Algorithm, r.Instance, r.Version})
			}
		}
		for k, r := range prev {
			if _, ok := now[k]; !ok {
				h.broadcast(EventDeparted, instanceEvent{r.Algorithm, r.Instance, r.Version})
			}
		}
		prev = now
	}
}

// resultWatchTries bounds the consecutive failures to (re)start the
// results watcher before job events stop; readiness then reports it.
const resultWatchTries = 20

// watchResults turns each new result record into a job event. Records
// whose job_id is not their key are corrupt and never reported.
func (h *hub) watchResults(ctx context.Context) {
	log := h.g.log
	backoff := 100 * time.Millisecond
	for failures := 0; ; {
		err := h.watchResultsOnce(ctx, func() { failures, backoff = 0, 100*time.Millisecond })
		if ctx.Err() != nil {
			return
		}
		failures++
		if failures >= resultWatchTries {
			log.Error().Err(err).Int("tries", failures).Msg("results watch gave up: no more job events")
			h.g.eventsDown.Store(true)
			h.resultsOnce.Do(func() { close(h.resultsReady) })
			return
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("results watch interrupted")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (h *hub) watchResultsOnce(ctx context.Context, healthy func()) error {
	w, err := h.g.store.Results().WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watch results: %w", err)
	}
	defer func() { _ = w.Stop() }()
	healthy()
	h.resultsOnce.Do(func() { close(h.resultsReady) })
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch results: watcher closed")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			r, err := jobs.DecodeResult(e.Key(), e.Value())
			if err != nil {
				h.g.log.Warn().Err(err).Str("key", e.Key()).Msg("corrupt result record: no event")
				continue
			}
			h.broadcast(EventJob, jobEvent{JobID: r.JobID, Algorithm: r.Algorithm, Status: string(r.Status), Attempts: r.Attempts, Error: r.Error, DurationMS: r.DurationMS, Progress: r.Progress})
		}
	}
}

// eventsReadyWait bounds how long a new event stream waits for the
// gateway's watchers to start.
const eventsReadyWait = 10 * time.Second

// sseKeepalive is how often an idle event stream gets a comment line, so
// proxies and the write deadline see it alive.
const sseKeepalive = 15 * time.Second

// eventStream is GET /v1/events: Server-Sent Events until the client
// leaves or the gateway stops.
func (g *Gateway) eventStream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// The stream opens once the gateway sees every change, and subscribes
	// before it opens: a client that acts after it connected gets the
	// events of what it did.
	ctx, cancel := context.WithTimeout(r.Context(), eventsReadyWait)
	err := g.events.ready(ctx)
	cancel()
	if err != nil {
		if r.Context().Err() == nil {
			writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "event stream not ready: discovery or the results watch has not started"})
		}
		return
	}
	release, ok := g.admitEvents(w)
	if !ok {
		return
	}
	defer release()
	ch, unsubscribe := g.events.subscribe()
	defer unsubscribe()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(s string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(sseKeepalive + 10*time.Second))
		if _, err := fmt.Fprint(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(": connected\nretry: 2000\n\n") {
		return
	}
	tick := time.NewTicker(sseKeepalive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if !write(": keepalive\n\n") {
				return
			}
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if !write("event: " + ev.name + "\ndata: " + string(ev.data) + "\n\n") {
				return
			}
		}
	}
}
