package runner

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// The runner answers the NATS micro control plane ($SRV.PING, $SRV.INFO,
// $SRV.STATS, by all, by name and by name+id) with micro's own types, so
// `nats micro ls/info/stats` and every micro-aware tool see each algorithm
// as a service. It does not hand the request subject to micro: micro calls an
// endpoint's handler one message at a time and measures (and counts errors
// of) that call, while the runner admits requests to a worker queue and
// replies from the workers. Owning the subscription also lets shutdown know
// when its drain is complete (the subscription's closed handler), so every
// request already delivered is served.

// serviceStats are the counters behind $SRV.STATS.
type serviceStats struct {
	requests  atomic.Int64
	errors    atomic.Int64
	busy      atomic.Int64 // nanoseconds
	mu        sync.Mutex
	lastError string
}

func (e *endpoint) identity() micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: e.alg.spec.Name, ID: e.instance, Version: e.alg.spec.Version, Metadata: e.metadata}
}

func (e *endpoint) info() micro.Info {
	return micro.Info{
		ServiceIdentity: e.identity(),
		Type:            micro.InfoResponseType,
		Description:     e.alg.spec.Description,
		Endpoints: []micro.EndpointInfo{{
			Name:       "run",
			Subject:    e.rec.Subject,
			QueueGroup: e.rec.QueueGroup,
			Metadata:   map[string]string{"discovery_key": e.rec.Key()},
		}},
	}
}

func (e *endpoint) microStats() micro.Stats {
	st := &e.svcStats
	st.mu.Lock()
	lastError := st.lastError
	st.mu.Unlock()
	requests, busy := st.requests.Load(), time.Duration(st.busy.Load())
	es := &micro.EndpointStats{
		Name:           "run",
		Subject:        e.rec.Subject,
		QueueGroup:     e.rec.QueueGroup,
		NumRequests:    int(requests),
		NumErrors:      int(st.errors.Load()),
		LastError:      lastError,
		ProcessingTime: busy,
	}
	if requests > 0 {
		es.AverageProcessingTime = busy / time.Duration(requests)
	}
	es.Data, _ = json.Marshal(e.stats())
	return micro.Stats{ServiceIdentity: e.identity(), Type: micro.StatsResponseType, Started: e.started, Endpoints: []*micro.EndpointStats{es}}
}

// record counts one finished request for $SRV.STATS.
func (e *endpoint) record(d time.Duration, er *Error) {
	st := &e.svcStats
	st.requests.Add(1)
	st.busy.Add(int64(d))
	if er != nil {
		st.errors.Add(1)
		st.mu.Lock()
		st.lastError = fmt.Sprintf("%d:%s", er.Code, er.Message)
		st.mu.Unlock()
	}
}

// subscribeMonitor subscribes the control-plane subjects and the
// algorithm's cancel subject.
func (e *endpoint) subscribeMonitor() error {
	verbs := map[micro.Verb]func() any{
		micro.PingVerb:  func() any { return micro.Ping{ServiceIdentity: e.identity(), Type: micro.PingResponseType} },
		micro.InfoVerb:  func() any { return e.info() },
		micro.StatsVerb: func() any { return e.microStats() },
	}
	for verb, source := range verbs {
		for _, target := range [][2]string{{"", ""}, {e.alg.spec.Name, ""}, {e.alg.spec.Name, e.instance}} {
			subj, err := micro.ControlSubject(verb, target[0], target[1])
			if err != nil {
				return err
			}
			sub, err := e.nc.Subscribe(subj, func(m *nats.Msg) {
				if m.Reply == "" {
					return
				}
				b, err := json.Marshal(source())
				if err != nil {
					return
				}
				_ = m.Respond(b)
			})
			if err != nil {
				return fmt.Errorf("subscribe %s: %w", subj, err)
			}
			e.monitorSubs = append(e.monitorSubs, sub)
		}
	}
	return e.subscribeCancel()
}

func (e *endpoint) unsubscribeMonitor() {
	for _, s := range e.monitorSubs {
		_ = s.Unsubscribe()
	}
	e.monitorSubs = nil
}
