package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// EventKind is what happened to a registration, as Watch reports it.
type EventKind string

// The kinds of Event.
const (
	// EventJoin is a key's first record: listed at the start, or put later.
	EventJoin EventKind = "join"
	// EventChange is a record that differs from the key's previous one in
	// more than its heartbeat time.
	EventChange EventKind = "change"
	// EventHeartbeat is a record renewed unchanged (only when asked for).
	EventHeartbeat EventKind = "heartbeat"
	// EventLeave is a record deleted: the instance deregistered.
	EventLeave EventKind = "leave"
	// EventExpire is a record removed by the bucket's max age: the
	// instance stopped sending heartbeats.
	EventExpire EventKind = "expire"
	// EventInvalid is a put that is not a valid record; Err says why.
	EventInvalid EventKind = "invalid"
	// EventListed follows the current registrations: what comes after it
	// happens as it is reported.
	EventListed EventKind = "listed"
)

// Event is one change of the registrations.
type Event struct {
	Kind EventKind
	// Key is the registration's key, <algorithm>.<instance>; empty for
	// EventListed.
	Key string
	// At is when the server stored the change.
	At time.Time
	// Registration is the record of a join, change or heartbeat.
	Registration Registration
	// Err says why the record of an EventInvalid was refused.
	Err error
}

// ErrWatchEnded is Watch's error when the watch ends without its context
// ending: the connection was lost.
var ErrWatchEnded = errors.New("watch ended (connection lost)")

// Watch calls fn with every change of the registrations until ctx ends,
// then returns nil: first a join per current registration and
// EventListed, then joins, changes, heartbeats (only with heartbeats
// set), leaves, expiries and invalid records as they happen. fn runs on
// the caller's goroutine. Watch fails with the watcher's error when it
// cannot start, and with ErrWatchEnded when the watch ends on its own.
func (r *Registry) Watch(ctx context.Context, heartbeats bool, fn func(Event)) error {
	w, err := r.bucket().WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	// last holds each live key's record without its heartbeat time, to
	// tell a heartbeat (nothing else changed) from a change.
	last := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return ErrWatchEnded
			}
			if e == nil {
				fn(Event{Kind: EventListed})
				continue
			}
			ev := Event{Key: e.Key(), At: e.Created()}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				rec, err := r.codec.Decode(e.Key(), e.Value())
				if err != nil {
					ev.Kind, ev.Err = EventInvalid, err
					fn(ev)
					continue
				}
				ev.Registration = rec
				rec.HeartbeatAt = time.Time{}
				sig, _ := json.Marshal(rec)
				prev, known := last[e.Key()]
				last[e.Key()] = string(sig)
				switch {
				case !known:
					ev.Kind = EventJoin
				case prev != string(sig):
					ev.Kind = EventChange
				case heartbeats:
					ev.Kind = EventHeartbeat
				default:
					continue
				}
			case jetstream.KeyValueDelete:
				delete(last, e.Key())
				ev.Kind = EventLeave
			default:
				delete(last, e.Key())
				ev.Kind = EventExpire
			}
			fn(ev)
		}
	}
}
