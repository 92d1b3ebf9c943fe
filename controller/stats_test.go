package controller_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/controller"
)

// Every controller answers StatsSubject with its own Stats, and
// StatsSubjectOf(instance) reaches that controller only: instance, the
// process's pid, goroutines and heap.
func TestControllerStats(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	c1 := startController(t, e, fastConfig(t))
	c2 := startController(t, e, fastConfig(t))

	inbox := e.nc.NewRespInbox()
	sub, err := e.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := e.nc.PublishRequest(controller.StatsSubject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	got := map[string]controller.Stats{}
	for len(got) < 2 {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("%d stats replies: %v", len(got), err)
		}
		var st controller.Stats
		if err := json.Unmarshal(m.Data, &st); err != nil {
			t.Fatalf("stats %s: %v", m.Data, err)
		}
		got[st.Instance] = st
	}
	for _, c := range []*ctlHandle{c1, c2} {
		st, ok := got[c.c.Instance()]
		if !ok {
			t.Fatalf("no stats from %s: %v", c.c.Instance(), got)
		}
		if st.Process.PID != os.Getpid() || st.Process.Goroutines < 2 || st.Process.HeapBytes == 0 || st.Started.IsZero() || st.MaxInFlight == 0 {
			t.Errorf("stats of %s: %+v", c.c.Instance(), st)
		}
	}

	m, err := e.nc.Request(controller.StatsSubjectOf(c2.c.Instance()), nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st controller.Stats
	if err := json.Unmarshal(m.Data, &st); err != nil || st.Instance != c2.c.Instance() {
		t.Fatalf("stats of %s: %s (%v)", c2.c.Instance(), m.Data, err)
	}
}
