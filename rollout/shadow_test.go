package rollout_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
)

// refEnv is a server with the outputs bucket, COMPARE and HISTORY, and a
// fake candidate "blob" 2.0.0 on its pinned subject that answers every
// request with the reply its test sets.
type refEnv struct {
	srv   *natstest.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	reply func(req *nats.Msg) *nats.Msg
}

func newRefEnv(t *testing.T) *refEnv {
	t.Helper()
	e := &refEnv{srv: natstest.Start(t)}
	e.nc = e.srv.Connect()
	e.js, _ = jetstream.New(e.nc)
	ctx := context.Background()
	if _, err := e.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: objref.OutputsBucket}); err != nil {
		t.Fatal(err)
	}
	if _, err := rollout.ProvisionCompare(ctx, e.js, rollout.CompareConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rollout.ProvisionHistory(ctx, e.js, rollout.HistoryConfig{}); err != nil {
		t.Fatal(err)
	}
	cand := e.srv.Connect()
	sub, err := cand.Subscribe(discovery.PinnedSubject("blob", "2.0.0"), func(m *nats.Msg) {
		r := e.reply(m)
		r.Subject = m.Reply
		_ = m.RespondMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The server has the subscription before any request is sent from
	// another connection; otherwise a loaded machine answers the first
	// one "no responders", an error that decides the comparison.
	if err := cand.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return e
}

// put stores data in the outputs bucket and returns a reply that refers
// to it, as a runner's reply to an output too large for a message.
func (e *refEnv) put(t *testing.T, name string, data []byte, version string) *nats.Msg {
	t.Helper()
	ref, err := objref.Put(context.Background(), e.js, objref.OutputsBucket, name, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Data: []byte(`{"output_ref":"` + ref.String() + `"}`),
		Header: nats.Header{protocol.HeaderOutputRef: {ref.String()}, protocol.HeaderVersion: {version}}}
}

// An output stored by reference that the comparer cannot read (here: over
// its size limit) leaves the comparison without a verdict: stored with
// not_compared, counted apart, and left out of the report's agreement,
// never judged equal or different.
func TestShadowWithoutAReadableOutputHasNoVerdict(t *testing.T) {
	e := newRefEnv(t)
	big := []byte(`{"data":"` + strings.Repeat("a", 100) + `"}`)
	other := []byte(`{"data":"` + strings.Repeat("b", 100) + `"}`)
	e.reply = func(*nats.Msg) *nats.Msg { return e.put(t, "blob/candidate", other, "2.0.0") }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sh := rollout.NewShadower(ctx, e.nc, e.js, rollout.ShadowOptions{MaxOutputBytes: 50})
	cand := []discovery.Registration{{Algorithm: "blob", Version: "2.0.0", Instance: "c1"}}
	sh.Offer(rollout.ShadowInput{Route: rollout.Route{Algorithm: "blob", Stable: "1.0.0", Shadow: "2.0.0"},
		Candidates: cand, Budget: 5 * time.Second, JobID: "j1", Body: []byte(`{}`), Stable: e.put(t, "blob/stable", big, "1.0.0")})
	sh.Wait()
	if n := sh.Counts(); n.Started != 1 || n.NotCompared != 1 || n.Compared != 0 {
		t.Fatalf("counts %+v, want one run stored without a verdict", n)
	}
	cs, err := rollout.ReadComparisons(context.Background(), e.js, "blob", time.Time{}, 0)
	if err != nil || len(cs) != 1 {
		t.Fatalf("comparisons %+v, %v", cs, err)
	}
	c := cs[0]
	if c.NotCompared == "" || !strings.Contains(c.NotCompared, "over the limit of 50") || c.Equal || len(c.Diffs) != 0 || c.StableError != "" || c.CandidateError != "" {
		t.Fatalf("comparison %+v; want not_compared and no verdict", c)
	}
	rep := rollout.Summarize("blob", cs)
	if rep.Total != 0 || rep.NotCompared != 1 || rep.NotComparedReason != c.NotCompared {
		t.Fatalf("report %+v", rep)
	}

	// Within the limit, the same outputs are compared by content: they
	// differ at /data.
	sh2 := rollout.NewShadower(ctx, e.nc, e.js, rollout.ShadowOptions{})
	sh2.Offer(rollout.ShadowInput{Route: rollout.Route{Algorithm: "blob", Stable: "1.0.0", Shadow: "2.0.0"},
		Candidates: cand, Budget: 5 * time.Second, JobID: "j2", Body: []byte(`{}`), Stable: e.put(t, "blob/stable2", big, "1.0.0")})
	sh2.Wait()
	cs, _ = rollout.ReadComparisons(context.Background(), e.js, "blob", time.Time{}, 0)
	if len(cs) != 2 || cs[1].Equal || cs[1].NotCompared != "" || len(cs[1].Diffs) != 1 || cs[1].Diffs[0].Pointer != "/data" {
		t.Fatalf("comparison %+v; want /data to differ", cs[len(cs)-1])
	}
	// Once Wait was called nothing more starts.
	sh2.Offer(rollout.ShadowInput{Route: rollout.Route{Algorithm: "blob", Stable: "1.0.0", Shadow: "2.0.0"},
		Candidates: cand, Budget: time.Second, Body: []byte(`{}`), Stable: e.put(t, "blob/stable3", big, "1.0.0")})
	if n := sh2.Counts(); n.Started != 1 {
		t.Errorf("counts after Wait %+v: a run started", n)
	}
}

// Replay of recorded outputs by reference: a record whose object is gone
// (the outputs bucket keeps objects for less time than HISTORY keeps
// records) has no verdict; a record from before output_ref was recorded
// apart (its output is the runner's {"output_ref": ...} body) is compared
// by the object's content.
func TestReplayOfRecordedReferences(t *testing.T) {
	e := newRefEnv(t)
	content := []byte(`{"data":"same"}`)
	e.reply = func(req *nats.Msg) *nats.Msg {
		if string(req.Data) == `{"crash":true}` {
			return &nats.Msg{Data: []byte(`{"code":500,"message":"crash"}`), Header: nats.Header{protocol.HeaderVersion: {"2.0.0"},
				protocol.HeaderErrorCode: {"500"}, protocol.HeaderError: {"crash"}}}
		}
		return &nats.Msg{Data: content, Header: nats.Header{protocol.HeaderVersion: {"2.0.0"}}}
	}
	legacy := e.put(t, "blob/legacy", content, "1.0.0")
	now := time.Now().UTC()
	for _, h := range []rollout.HistoryRecord{
		{Algorithm: "blob", JobID: "gone", Version: "1.0.0", Input: json.RawMessage(`{}`), OutputRef: "obj://outputs/blob/expired", MS: 1, At: now},
		{Algorithm: "blob", JobID: "gone-crash", Version: "1.0.0", Input: json.RawMessage(`{"crash":true}`), OutputRef: "obj://outputs/blob/expired", MS: 1, At: now},
		{Algorithm: "blob", JobID: "legacy", Version: "1.0.0", Input: json.RawMessage(`{}`), Output: legacy.Data, MS: 1, At: now},
		{Algorithm: "blob", JobID: "inline", Version: "1.0.0", Input: json.RawMessage(`{}`), Output: json.RawMessage(`{"data":"other"}`), MS: 1, At: now},
	} {
		b, _ := json.Marshal(h)
		if _, err := e.js.Publish(context.Background(), rollout.HistorySubjectPrefix+"blob", b); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := rollout.Replay(context.Background(), e.nc, e.js, rollout.ReplayConfig{Algorithm: "blob", Version: "2.0.0", Last: 10})
	if err != nil || len(cs) != 4 {
		t.Fatalf("replay: %d comparisons, %v", len(cs), err)
	}
	byID := map[string]rollout.Comparison{}
	for _, c := range cs {
		byID[c.JobID] = c
	}
	if c := byID["gone"]; c.NotCompared == "" || !strings.Contains(c.NotCompared, "recorded output") || c.Equal {
		t.Errorf("gone: %+v; want no verdict", c)
	}
	if c := byID["gone-crash"]; c.NotCompared != "" || c.Equal || c.CandidateError != "500: crash" {
		t.Errorf("gone-crash: %+v; want the candidate's crash as the verdict", c)
	}
	if c := byID["legacy"]; !c.Equal || c.NotCompared != "" {
		t.Errorf("legacy: %+v; want equal by content", c)
	}
	if c := byID["inline"]; c.Equal || len(c.Diffs) != 1 || c.Diffs[0].Pointer != "/data" {
		t.Errorf("inline: %+v; want /data to differ", c)
	}
	rep := rollout.Summarize("blob", cs)
	if rep.Total != 3 || rep.Agree != 1 || rep.NotCompared != 1 {
		t.Errorf("report %+v; want 1 of 3 agreeing, 1 not compared", rep)
	}
	for _, v := range rep.Versions {
		if v.Runs != 4 || (v.Version == "2.0.0") != (v.Errors == 1) {
			t.Errorf("version report %+v; want every run counted, the crash too", v)
		}
	}
}

// The last N records of an algorithm are read from near the end of the
// stream, whether its records are spread over the stream or bunched at
// its start (then the whole subject is read): exactly the newest N, in
// order, either way.
func TestReadLastRecords(t *testing.T) {
	srv := natstest.Start(t)
	js, _ := jetstream.New(srv.Connect())
	ctx := context.Background()
	if _, err := rollout.ProvisionHistory(ctx, js, rollout.HistoryConfig{}); err != nil {
		t.Fatal(err)
	}
	publish := func(alg string, i int) {
		b, _ := json.Marshal(rollout.HistoryRecord{Algorithm: alg, JobID: fmt.Sprintf("%s-%d", alg, i), Version: "1", At: time.Now()})
		if _, err := js.Publish(ctx, rollout.HistorySubjectPrefix+alg, b); err != nil {
			t.Fatal(err)
		}
	}
	// "spread" is every third record, then every fourth; "bunched" all
	// comes in between.
	for i := range 600 {
		if i%3 == 0 {
			publish("spread", i/3)
		} else {
			publish("other", i)
		}
	}
	for i := range 200 {
		publish("bunched", i)
	}
	for i := range 1000 {
		if i%4 == 0 {
			publish("spread", 200+i/4)
		} else {
			publish("other", 1000+i)
		}
	}
	for _, c := range []struct {
		alg         string
		total, last int
	}{{"spread", 450, 50}, {"spread", 450, 300}, {"bunched", 200, 50}, {"spread", 450, 500}} {
		h, err := rollout.ReadHistory(ctx, js, c.alg, time.Time{}, c.last)
		if err != nil {
			t.Fatal(err)
		}
		want := min(c.last, c.total)
		if len(h) != want {
			t.Fatalf("%s, last %d: %d records, want %d", c.alg, c.last, len(h), want)
		}
		for i, r := range h {
			if id := fmt.Sprintf("%s-%d", c.alg, c.total-want+i); r.JobID != id {
				t.Fatalf("%s, last %d: record %d is %s, want %s", c.alg, c.last, i, r.JobID, id)
			}
		}
	}
	// No read leaves a consumer behind (a dashboard reads every few
	// seconds).
	st, err := js.Stream(ctx, rollout.HistoryStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Consumers != 0 {
		t.Fatalf("%d consumers left on %s after the reads (%v)", info.State.Consumers, rollout.HistoryStream, err)
	}
}
