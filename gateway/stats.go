package gateway

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// algorithmStats sums the $SRV.STATS replies of an algorithm's instances,
// plus the latency percentiles of the requests the gateway itself sent.
type algorithmStats struct {
	// Replies counts the instances that answered in time.
	Replies  int              `json:"replies"`
	Requests int64            `json:"requests"`
	Errors   int64            `json:"errors"`
	InFlight int64            `json:"in_flight"`
	Waiting  int64            `json:"waiting"`
	Served   int64            `json:"served"`
	ByCode   map[string]int64 `json:"errors_by_code,omitempty"`
	// AvgRunMS is the runners' mean run time, weighted by requests served.
	AvgRunMS float64 `json:"avg_run_ms"`
	// Gateway* are the percentiles of the last requests the gateway sent
	// to the algorithm (POST .../run), as the caller saw them.
	GatewayP50MS   float64 `json:"gateway_p50_ms"`
	GatewayP99MS   float64 `json:"gateway_p99_ms"`
	GatewaySamples int     `json:"gateway_samples"`
}

// endpointData is the part of a runner's STATS data the gateway reads.
type endpointData struct {
	InFlight int64            `json:"in_flight"`
	Waiting  int64            `json:"waiting"`
	Served   int64            `json:"served"`
	Errors   map[string]int64 `json:"errors_by_code"`
	AvgRunMS float64          `json:"avg_run_ms"`
}

// statsCache collects $SRV.STATS.<algorithm> replies and keeps them for
// ttl, so a dashboard refreshing every second costs one round of requests.
type statsCache struct {
	nc      *nats.Conn
	timeout time.Duration
	ttl     time.Duration

	mu      sync.Mutex
	entries map[string]statsEntry
}

type statsEntry struct {
	at    time.Time
	stats algorithmStats
}

func newStatsCache(nc *nats.Conn, timeout, ttl time.Duration) *statsCache {
	return &statsCache{nc: nc, timeout: timeout, ttl: ttl, entries: map[string]statsEntry{}}
}

// get returns the algorithm's stats, collected at most ttl ago. expect is
// how many instances discovery knows: collection stops once they all
// answered, or after the timeout.
func (c *statsCache) get(ctx context.Context, alg string, expect int) *algorithmStats {
	c.mu.Lock()
	e, ok := c.entries[alg]
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.ttl {
		s := e.stats
		return &s
	}
	s := c.collect(ctx, alg, expect)
	c.mu.Lock()
	if len(c.entries) > 1024 {
		clear(c.entries)
	}
	c.entries[alg] = statsEntry{at: time.Now(), stats: s}
	c.mu.Unlock()
	return &s
}

func (c *statsCache) collect(ctx context.Context, alg string, expect int) algorithmStats {
	var s algorithmStats
	subj, err := micro.ControlSubject(micro.StatsVerb, alg, "")
	if err != nil {
		return s
	}
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return s
	}
	defer sub.Unsubscribe()
	if err := c.nc.PublishRequest(subj, inbox, nil); err != nil {
		return s
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var runSum float64
	seen := map[string]bool{}
	for expect <= 0 || s.Replies < expect {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break
		}
		var st micro.Stats
		if json.Unmarshal(m.Data, &st) != nil || seen[st.ID] {
			continue
		}
		seen[st.ID] = true
		s.Replies++
		for _, ep := range st.Endpoints {
			s.Requests += int64(ep.NumRequests)
			s.Errors += int64(ep.NumErrors)
			var d endpointData
			if json.Unmarshal(ep.Data, &d) != nil {
				continue
			}
			s.InFlight += d.InFlight
			s.Waiting += d.Waiting
			s.Served += d.Served
			runSum += d.AvgRunMS * float64(d.Served)
			for code, n := range d.Errors {
				if s.ByCode == nil {
					s.ByCode = map[string]int64{}
				}
				s.ByCode[code] += n
			}
		}
	}
	if s.Served > 0 {
		s.AvgRunMS = runSum / float64(s.Served)
	}
	return s
}

// latencyWindow is how many recent requests per algorithm the gateway's
// percentiles are computed from.
const latencyWindow = 1024

// latencies keeps the durations of the last requests per algorithm.
type latencies struct {
	mu   sync.Mutex
	byAl map[string]*ring
}

type ring struct {
	d    [latencyWindow]float64
	n, i int
}

func newLatencies() *latencies { return &latencies{byAl: map[string]*ring{}} }

func (l *latencies) add(alg string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.byAl[alg]
	if r == nil {
		if len(l.byAl) > 1024 {
			clear(l.byAl)
		}
		r = &ring{}
		l.byAl[alg] = r
	}
	r.d[r.i] = float64(d.Microseconds()) / 1000
	r.i = (r.i + 1) % latencyWindow
	r.n = min(r.n+1, latencyWindow)
}

// percentiles returns p50 and p99 in milliseconds and the sample count.
func (l *latencies) percentiles(alg string) (p50, p99 float64, n int) {
	l.mu.Lock()
	r := l.byAl[alg]
	if r == nil {
		l.mu.Unlock()
		return 0, 0, 0
	}
	s := slices.Clone(r.d[:r.n])
	l.mu.Unlock()
	slices.Sort(s)
	at := func(q float64) float64 { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), len(s)
}
