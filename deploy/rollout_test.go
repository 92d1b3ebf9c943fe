package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
)

// Versions side by side under nats.conf: the admin provisions and writes
// routes, the runner watches them and serves its pinned subject, the
// controller follows the route and records job history, each without a
// permission violation (checked at cleanup by startDeployment).
func TestRolloutUnderRoles(t *testing.T) {
	d := startDeployment(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := d.admin.js(t)
	st, err := rollout.Provision(ctx, js, rollout.Config{})
	if err != nil {
		t.Fatalf("admin provisions routes: %v", err)
	}
	if _, err := rollout.ProvisionHistory(ctx, js, rollout.HistoryConfig{}); err != nil {
		t.Fatalf("admin provisions HISTORY: %v", err)
	}
	if _, err := rollout.ProvisionCompare(ctx, js, rollout.CompareConfig{}); err != nil {
		t.Fatalf("admin provisions COMPARE: %v", err)
	}
	body := []byte(`{"text":"Guten Morgen, wie geht es dir heute?"}`)

	// Pinned subject, and Pnp-Version on the shared one.
	for _, m := range []*nats.Msg{
		{Subject: "run.language_detection.v1_0_0", Data: body},
		{Subject: "run.language_detection", Data: body, Header: nats.Header{protocol.HeaderVersion: {"1.0.0"}}},
	} {
		reply, err := d.admin.RequestMsg(m, 10*time.Second)
		if err != nil || protocol.ReplyError(reply) != nil || reply.Header.Get(protocol.HeaderVersion) != "1.0.0" {
			t.Fatalf("request on %s: %v %v", m.Subject, err, reply)
		}
	}

	// A second version under the same runner user; a route to it: the
	// 1.0.0 runner, watching routes and discovery under its permissions,
	// leaves run.language_detection.
	rc := connect(t, d.url, "text_runner")
	v2, err := runner.NewRawAlgorithm(runner.Spec{Name: "language_detection", Version: "2.0.0",
		InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`)},
		func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			return json.RawMessage(`{"v":2}`), nil
		})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := runner.New(rc.Conn, []*runner.Algorithm{v2}, rc.runnerOptions(runner.WithoutProvisioning())...)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopR2 := context.WithCancel(context.Background())
	r2done := make(chan struct{})
	go func() { defer close(r2done); _ = r2.Run(rctx) }()
	t.Cleanup(func() { stopR2(); <-r2done; rc.expectClean(t) })
	<-r2.Started()
	if err := st.Set(ctx, rollout.Route{Algorithm: "language_detection", Stable: "2.0.0"}); err != nil {
		t.Fatalf("admin sets a route: %v", err)
	}
	natstest.Eventually(t, 30*time.Second, func() bool {
		for range 10 {
			reply, err := d.admin.Request("run.language_detection", body, 10*time.Second)
			if err != nil || reply.Header.Get(protocol.HeaderVersion) != "2.0.0" {
				return false
			}
		}
		return true
	}, "plain requests never settled on the routed version 2.0.0")
	// Pnp-Version: 1.0.0 on the shared subject: 2.0.0 forwards it to
	// 1.0.0's pinned subject, which answers the caller directly.
	reply, err := d.admin.RequestMsg(&nats.Msg{Subject: "run.language_detection", Data: body,
		Header: nats.Header{protocol.HeaderVersion: {"1.0.0"}}}, 10*time.Second)
	if err != nil || protocol.ReplyError(reply) != nil || reply.Header.Get(protocol.HeaderVersion) != "1.0.0" {
		t.Fatalf("forwarded request: %v %v", err, reply)
	}

	// The controller follows a route back to 1.0.0 and records history.
	if err := st.Set(ctx, rollout.Route{Algorithm: "language_detection", Stable: "1.0.0", Shadow: "2.0.0"}); err != nil {
		t.Fatalf("admin sets a route: %v", err)
	}
	n := 0
	natstest.Eventually(t, 30*time.Second, func() bool {
		n++
		sub, err := d.store.Submit(ctx, "language_detection", body, controller.SubmitOptions{ID: fmt.Sprintf("rollout-%d", n)})
		if err != nil {
			t.Fatal(err)
		}
		res, err := d.store.WaitResult(ctx, sub.ID, nil)
		if err != nil || res.Status != controller.StatusSucceeded {
			t.Fatalf("job under a route: %v %+v", err, res)
		}
		h, err := rollout.ReadHistory(ctx, js, "language_detection", time.Time{}, 0)
		c, err2 := rollout.ReadComparisons(ctx, js, "language_detection", time.Time{}, 0)
		return err == nil && err2 == nil && len(h) > 0 && len(c) > 0
	}, "the controller never recorded a job in HISTORY (rate 0.1) and a shadow comparison in COMPARE")

	// Comparisons of another algorithm, so that reading the last few of
	// language_detection starts near the end of COMPARE.
	for i := range 300 {
		b, _ := json.Marshal(rollout.Comparison{Algorithm: "other_alg", JobID: fmt.Sprint(i), Source: rollout.SourceShadow,
			StableVersion: "1", CandidateVersion: "2", Equal: true, At: time.Now().UTC()})
		if _, err := js.Publish(ctx, rollout.CompareSubjectPrefix+"other_alg", b); err != nil {
			t.Fatal(err)
		}
	}

	// The gateway, under its role, shadows the runs it serves: a
	// comparison without a job id.
	base, gc := startGatewayRole(t, d)
	natstest.Eventually(t, 30*time.Second, func() bool {
		if code, b := httpDo(t, "POST", base+"/v1/algorithms/language_detection/run", string(body), nil); code != 200 {
			t.Fatalf("run through the gateway: %d %s", code, b)
		}
		cs, err := rollout.ReadComparisons(ctx, js, "language_detection", time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.JobID == "" {
				return true
			}
		}
		return false
	}, "the gateway never stored a shadow comparison of a run")
	if code, b := httpDo(t, "GET", base+"/v1/routes", "", nil); code != 200 || !strings.Contains(string(b), `"shadow":"2.0.0"`) {
		t.Errorf("GET /v1/routes under the gateway role: %d %s", code, b)
	}
	for _, last := range []string{"1", "1000"} {
		code, b := httpDo(t, "GET", base+"/v1/algorithms/language_detection/comparisons?last="+last, "", nil)
		var rep rollout.Report
		if code != 200 || json.Unmarshal(b, &rep) != nil || rep.Total == 0 {
			t.Errorf("comparisons (last %s) under the gateway role: %d %s", last, code, b)
		}
	}
	gc.expectClean(t)
}
