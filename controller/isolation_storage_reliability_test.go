package controller_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/objref"
)

// Attack: a producer floods the jobs of one algorithm — one nobody serves,
// so nothing drains them — until JOBS is full, and every other algorithm's
// submission is refused for as long as the flood waits (up to the maximum
// job age). Rule: an algorithm may hold at most JobsMaxPerAlgorithm jobs;
// past it only that algorithm's jobs are refused, with an error naming the
// subject and the limit, and the other algorithms' jobs are stored. By
// count the default confines a flood (10 000 of JobsMaxMsgs' 1 000 000);
// by bytes a limit sized for the largest jobs does (here 4 jobs of the
// 1 MiB max payload, half of an 8 MiB JOBS).
func TestFloodOfOneAlgorithmLeavesRoomForOthersReliability(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name string
		cfg  controller.StoreConfig
		body int   // bytes of padding per job
		cap  int64 // jobs the flooded algorithm holds
	}{
		// 8 MiB of JOBS, jobs of ~1 MiB (the server's max payload), 4
		// per algorithm: half of JOBS.
		{"by bytes", controller.StoreConfig{JobsMaxBytes: 8 * mib, JobsMaxPerAlgorithm: 4}, mib - 16<<10, 4},
		// 100 small jobs in all: by default 50 per algorithm.
		{"by count, the default limit", controller.StoreConfig{JobsMaxBytes: 8 * mib, JobsMaxMsgs: 100}, 100, 50},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			body := []byte(`{"pad":"` + strings.Repeat("x", tc.body) + `"}`)
			var refused error
			flooded := 0
			for i := 0; i < 1000 && refused == nil; i++ {
				if _, refused = e.store.Submit(ctx, "flood", body, controller.SubmitOptions{}); refused == nil {
					flooded++
				}
			}
			t.Logf("the flood stored %d jobs, then: %v", flooded, refused)
			if !errors.Is(refused, controller.ErrAlgorithmFull) || !errors.Is(refused, controller.ErrJobsFull) {
				t.Fatalf("the flood was not refused as a full algorithm after %d jobs: %v", flooded, refused)
			}
			if want := fmt.Sprintf("jobs.flood: per-algorithm queue full (%d jobs waiting in stream JOBS", tc.cap); !strings.Contains(refused.Error(), want) || int64(flooded) != tc.cap {
				t.Fatalf("flood of %d jobs refused with %q, want %d jobs and %q", flooded, refused, tc.cap, want)
			}
			// Another algorithm still gets its jobs stored, as many as its
			// own limit.
			for i := range tc.cap {
				if _, err := e.store.Submit(ctx, "other", body, controller.SubmitOptions{}); err != nil {
					t.Fatalf("job %d of another algorithm refused while one is flooded: %v", i+1, err)
				}
			}
			info, err := e.store.Jobs().Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := uint64(2 * tc.cap); info.State.Msgs != want || info.State.FirstSeq != 1 {
				t.Fatalf("JOBS holds %d jobs from seq %d, want %d from 1 (none dropped)", info.State.Msgs, info.State.FirstSeq, want)
			}
		})
	}
}

// An existing JOBS without a per-algorithm limit, holding more jobs of one
// algorithm than the new limit: provisioning does not drop them (JetStream
// meets a lowered per-subject limit by deleting the oldest messages), it
// keeps the limit at what waits; provisioned again once they are gone, the
// configured limit applies.
func TestProvisionKeepsWaitingJobsAboveTheLimitReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{JobsMaxPerAlgorithm: -1})
	for i := range 6 {
		e.submit(t, "busy", fmt.Sprintf("busy-%d", i), echoIn{N: i})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	limit := func() int64 {
		t.Helper()
		info, err := e.store.Jobs().Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Config.MaxMsgsPerSubject
	}
	if _, err := controller.Provision(ctx, e.js, controller.StoreConfig{JobsMaxPerAlgorithm: 4}); err != nil {
		t.Fatal(err)
	}
	if left := e.jobsLeft(t); left != 6 {
		t.Fatalf("provisioning with a per-algorithm limit of 4 left %d of 6 waiting jobs", left)
	}
	if got := limit(); got != 6 {
		t.Fatalf("per-algorithm limit %d, want 6 (what waits) until the jobs are fewer", got)
	}
	if err := e.store.Jobs().Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := controller.Provision(ctx, e.js, controller.StoreConfig{JobsMaxPerAlgorithm: 4}); err != nil {
		t.Fatal(err)
	}
	if got := limit(); got != 4 {
		t.Fatalf("per-algorithm limit %d once JOBS is empty, want 4", got)
	}
}

// Attack: the jobs of an algorithm nobody serves wait for the maximum job
// age (7 days by default) — a flood of them holds JOBS' room all that
// time. Rule: a job of an algorithm no runner has ever registered for
// expires after MaxUnservedJobAge (1 h by default), as a 504 "expired" with
// a dead letter; one whose algorithm a runner has served before (marked in
// the served bucket) still waits up to MaxJobAge for its runner to return.
func TestJobsOfNeverServedAlgorithmsExpireSoonerReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	cfg := fastConfig(t)
	cfg.MaxJobAge = time.Hour
	cfg.MaxUnservedJobAge = 2 * time.Second
	startController(t, e, cfg)
	neverServed := func(id string) {
		t.Helper()
		res := e.waitFinal(t, id, 30*time.Second)
		if res.Status != controller.StatusFailed || res.Error == nil || res.Error.Code != 504 ||
			!strings.Contains(res.Error.Message, "no runner has ever registered for") {
			t.Fatalf("%s: %s %+v, want failed 504 as expired for an algorithm never served", id, res.Status, res.Error)
		}
	}
	e.submit(t, "never_served", "ns-1", echoIn{N: 1})
	neverServed("ns-1")
	if dead := e.deadOf(t, "never_served"); len(dead["ns-1"]) != 1 {
		t.Errorf("dead letters: %v, want one for ns-1", dead)
	}

	// A runner served "returning" once and left.
	var calls atomic.Int64
	r := startRunner(t, e.srv, echo(t, "returning", &calls))
	natstest.Eventually(t, 20*time.Second, func() bool {
		served, err := e.js.KeyValue(context.Background(), controller.ServedBucket)
		if err != nil {
			return false
		}
		_, err = served.Get(context.Background(), "returning")
		return err == nil
	}, "the controller never marked the algorithm it served in bucket %s", controller.ServedBucket)
	r.stop()
	e.submit(t, "returning", "ret-1", echoIn{N: 1})
	e.submit(t, "never_served", "ns-2", echoIn{N: 2})
	// The sweep that expires ns-2 finds ret-1, stored before it, past the
	// short age too: it leaves it to wait for its runner.
	neverServed("ns-2")
	natstest.Eventually(t, 10*time.Second, func() bool { return e.jobsLeft(t) == 1 }, "ns-2 still in JOBS")
	if _, err := e.store.Result(context.Background(), "ret-1"); !errors.Is(err, controller.ErrNoResult) {
		t.Fatalf("ret-1, of an algorithm served before, has an outcome already: %v", err)
	}
	startRunner(t, e.srv, echo(t, "returning", &calls))
	if res := e.waitFinal(t, "ret-1", 30*time.Second); res.Status != controller.StatusSucceeded {
		t.Fatalf("ret-1: %s %+v once its runner is back, want succeeded", res.Status, res.Error)
	}
}

// Attack: uploads fill the inputs bucket (1 GiB: 15 uploads of 64 MiB
// through the HTTP API) and every upload fails until they expire, 24 h
// later. Rule: one object is at most InputsMaxObjectBytes, enforced by the
// server for any client (chunks of at most 128 KiB, so many per object);
// a full bucket refuses with an error naming the bucket, its size and its
// TTL, and takes uploads again once the flood's objects expire — after the
// inputs TTL, 1 h by default. Nothing is kept of a refused upload.
func TestUploadFloodIsBoundedReliability(t *testing.T) {
	const mib = 1 << 20
	e := newEnv(t, controller.StoreConfig{
		Inputs:               controller.ObjectsConfig{MaxBytes: 4 * mib, TTL: 3 * time.Second},
		InputsMaxObjectBytes: mib,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	data := func(n int) *strings.Reader { return strings.NewReader(strings.Repeat("x", n)) }

	// Over the per-object limit: refused by the server, also to a plain
	// nats.go object store client, and nothing of it stays.
	if _, err := e.store.PutInput(ctx, "big", data(mib+1)); !errors.Is(err, objref.ErrBucketLimit) ||
		!strings.Contains(err.Error(), "larger than one object of bucket inputs may be (8 chunks;") {
		t.Fatalf("an object over the limit: %v, want it refused naming the limit", err)
	}
	obs, err := e.js.ObjectStore(ctx, controller.InputsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: "raw-big"}, data(2*mib)); err == nil {
		t.Fatal("a plain object store client stored an object over the limit")
	}
	if _, err := obs.GetInfo(ctx, "big"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("refused object big: %v, want not found", err)
	}
	// A plain client leaves the metadata behind (nats.go publishes it
	// before it learns of the refusal), but the object cannot be read.
	if _, err := objref.Read(ctx, e.js, objref.Ref{Bucket: controller.InputsBucket, Name: "raw-big"}, 4*mib); err == nil {
		t.Errorf("refused object raw-big can be read")
	}
	st, err := e.js.Stream(ctx, "OBJ_"+controller.InputsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx, jetstream.WithSubjectFilter("$O.inputs.C.>")); err != nil || len(info.State.Subjects) != 0 {
		t.Fatalf("chunks of refused uploads stay: %v (%v)", info.State.Subjects, err)
	}

	// A flood of objects at the limit fills the bucket; the refusal says
	// which bucket is full and when its objects go.
	var full error
	stored := 0
	for i := 0; i < 100 && full == nil; i++ {
		if _, full = e.store.PutInput(ctx, fmt.Sprintf("flood-%d", i), data(mib-1024)); full == nil {
			stored++
		}
	}
	if !errors.Is(full, objref.ErrBucketLimit) || !strings.Contains(full.Error(), "bucket inputs is full (4194304 bytes; objects are removed 3s after they are put)") {
		t.Fatalf("after %d uploads: %v, want a refusal naming the full bucket", stored, full)
	}
	// The flood's objects expire with the bucket's TTL, and uploads work
	// again.
	natstest.Eventually(t, 30*time.Second, func() bool {
		_, err := e.store.PutInput(ctx, "after-the-flood", data(1000))
		return err == nil
	}, "uploads still refused after the flood's objects expired")
}

// The inputs bucket keeps uploads DefaultInputTTL (1 h), not a day, by
// default: the longest a flood can keep it full.
func TestInputsDefaultTTLReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	obs, err := e.js.ObjectStore(context.Background(), controller.InputsBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := obs.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != time.Hour {
		t.Fatalf("inputs TTL %s, want 1h", st.TTL())
	}
}
