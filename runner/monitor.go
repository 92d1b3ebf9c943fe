package runner

import (
	"encoding/json"
	"fmt"
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
	requests  int64
	errors    int64
	lastError string
	busy      time.Duration
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
	e.statsMu.Lock()
	st := e.svcStats
	e.statsMu.Unlock()
	es := &micro.EndpointStats{
		Name:           "run",
		Subject:        e.rec.Subject,
		QueueGroup:     e.rec.QueueGroup,
		NumRequests:    int(st.requests),
		NumErrors:      int(st.errors),
		LastError:      st.lastError,
		ProcessingTime: st.busy,
	}
	if st.requests > 0 {
		es.AverageProcessingTime = st.busy / time.Duration(st.requests)
	}
	es.Data, _ = json.Marshal(e.stats())
	return micro.Stats{ServiceIdentity: e.identity(), Type: micro.StatsResponseType, Started: e.started, Endpoints: []*micro.EndpointStats{es}}
}

// record counts one finished request for $SRV.STATS.
func (e *endpoint) record(d time.Duration, er *Error) {
	e.statsMu.Lock()
	e.svcStats.requests++
	e.svcStats.busy += d
	if er != nil {
		e.svcStats.errors++
		e.svcStats.lastError = fmt.Sprintf("%d:%s", er.Code, er.Message)
	}
	e.statsMu.Unlock()
}

// subscribeMonitor subscribes the control-plane subjects.
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
	return nil
}

func (e *endpoint) unsubscribeMonitor() {
	for _, s := range e.monitorSubs {
		_ = s.Unsubscribe()
	}
	e.monitorSubs = nil
}
