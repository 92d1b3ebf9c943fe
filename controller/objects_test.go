package controller_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// foreignRunner registers instance inst of alg the way a runner written
// without this module would, and answers every request with reply.
func foreignRunner(t *testing.T, e *env, alg, inst string, reply []byte) {
	t.Helper()
	nc := e.srv.Connect()
	sub, err := nc.QueueSubscribe("run."+alg, "runners", func(m *nats.Msg) { _ = m.Respond(reply) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	rec := discovery.Registration{
		Algorithm: alg, Version: "1.0.0", Instance: inst,
		Subject: "run." + alg, QueueGroup: "runners",
		InputSchema: json.RawMessage(`{"type":"object"}`), OutputSchema: json.RawMessage(`{}`),
		TimeoutMS: 5000, MaxConcurrency: 4, StartedAt: time.Now().UTC(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.store.Registry().Register(ctx, rec); err != nil {
		t.Fatal(err)
	}
}

// A result whose output fits the runner's reply but not, with the record
// around it, the results bucket is stored by reference instead of failing
// with 413; the output read back is the runner's, byte for byte.
func TestOutputTooLargeForRecordStoredByReference(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	mp := int(e.nc.MaxPayload())
	body := []byte(`{"data":"` + strings.Repeat("x", mp-600) + `"}`)
	foreignRunner(t, e, "blob", "f1", body)
	startController(t, e, fastConfig(t))
	e.submit(t, "blob", "big-1", map[string]int{"n": 1})
	r := e.waitResult(t, "big-1")
	if r.Status != controller.StatusSucceeded || r.Output != nil || r.OutputRef != "obj://outputs/blob/big-1" {
		t.Fatalf("result: status %s, error %v, output %d bytes, output_ref %q; want succeeded by reference", r.Status, r.Error, len(r.Output), r.OutputRef)
	}
	_, raw := e.final(t, "big-1")
	checkSchema(t, resultSchema(t), raw)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := e.store.Output(ctx, r, 0)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("output by reference: %d bytes, %v; want the runner's %d bytes", len(got), err, len(body))
	}
}

// A runner written with the nats CLI replies with a trailing newline and
// spaces; the stored record carries the output in compact form.
func TestForeignOutputStoredCompact(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	foreignRunner(t, e, "cli", "f1", []byte("{\"n\": 1, \"s\": \"a b\\n\"}\n"))
	startController(t, e, fastConfig(t))
	e.submit(t, "cli", "compact-1", map[string]int{"n": 1})
	e.waitResult(t, "compact-1")
	_, raw := e.final(t, "compact-1")
	if !bytes.Contains(raw, []byte(`"output":{"n":1,"s":"a b\n"},`)) {
		t.Fatalf("stored record %s; want the output compacted", raw)
	}
}

// blobIn and blobOut are the input and output of an algorithm whose
// output is larger than a message.
type blobIn struct {
	Size int `json:"size"`
}

type blobOut struct {
	Data string `json:"data"`
}

// An output larger than the server's max payload is stored by the runner
// in the outputs bucket: the reply carries its reference, the job
// succeeds with output_ref, and the output read back is the algorithm's.
func TestRunnerOutputStoredByReference(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	alg, err := runner.NewAlgorithm(runner.Spec{
		Name: "blob", Version: "1.0.0",
		InputSchema:  []byte(`{"type":"object","required":["size"],"properties":{"size":{"type":"integer"}}}`),
		OutputSchema: []byte(`{"type":"object","required":["data"],"properties":{"data":{"type":"string"}}}`),
		Timeout:      10 * time.Second,
	}, func(_ context.Context, in blobIn) (blobOut, error) {
		return blobOut{Data: strings.Repeat("0123456789", in.Size/10)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	startRunner(t, e.srv, alg)
	size := 3 * int(e.nc.MaxPayload())
	want, _ := json.Marshal(blobOut{Data: strings.Repeat("0123456789", size/10)})

	// Request-reply: the reply is the reference.
	reply, err := e.nc.Request("run.blob", []byte(`{"size":`+jsonInt(size)+`}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ref := reply.Header.Get(protocol.HeaderOutputRef)
	if rerr := protocol.ReplyError(reply); rerr != nil || !strings.HasPrefix(ref, "obj://outputs_blob/") || string(reply.Data) != `{"output_ref":"`+ref+`"}` {
		t.Fatalf("reply: error %v, %s %q, body %s", rerr, protocol.HeaderOutputRef, ref, reply.Data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := objref.Read(ctx, e.js, mustRef(t, ref), 0)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("object %s: %d bytes, %v; want %d bytes", ref, len(got), err, len(want))
	}

	// A job: the record carries output_ref.
	startController(t, e, fastConfig(t))
	e.submit(t, "blob", "blob-1", blobIn{Size: size})
	r := e.waitResult(t, "blob-1")
	if r.Status != controller.StatusSucceeded || r.OutputRef == "" {
		t.Fatalf("result: status %s, error %v, output_ref %q", r.Status, r.Error, r.OutputRef)
	}
	_, raw := e.final(t, "blob-1")
	checkSchema(t, resultSchema(t), raw)
	if got, err := e.store.Output(ctx, r, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("output: %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
}

// SubmitFile uploads the file to the inputs bucket and submits a job whose
// input refers to it.
func TestSubmitFile(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	path := filepath.Join(t.TempDir(), "photo.png")
	content := bytes.Repeat([]byte("not really a png "), 100_000) // 1.7 MB, over a message
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, ref, err := e.store.SubmitFile(ctx, "meme_classifier", path, controller.FileOptions{Input: json.RawMessage(`{"top_k":3}`)})
	if err != nil {
		t.Fatal(err)
	}
	if ref.Bucket != controller.InputsBucket || !strings.HasSuffix(ref.Name, "/photo.png") {
		t.Fatalf("ref = %s", ref)
	}
	msg, err := e.store.Jobs().GetMsg(ctx, sub.Seq)
	if err != nil {
		t.Fatal(err)
	}
	var in map[string]any
	if err := json.Unmarshal(msg.Data, &in); err != nil || in["image_url"] != ref.String() || in["top_k"] != 3.0 {
		t.Fatalf("job input %s; want image_url %s and top_k 3", msg.Data, ref)
	}
	got, err := objref.Read(ctx, e.js, ref, 0)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("uploaded object: %d bytes, %v", len(got), err)
	}
}

func jsonInt(n int) string { b, _ := json.Marshal(n); return string(b) }

func mustRef(t *testing.T, s string) objref.Ref {
	t.Helper()
	r, err := objref.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// refRunner answers every request on run.<alg> with the reference ref, as
// a runner whose output did not fit a message does, naming itself
// instance.
func refRunner(t *testing.T, e *env, alg, instance string, r objref.Ref) {
	t.Helper()
	ref := r.String()
	nc := e.srv.Connect()
	sub, err := nc.QueueSubscribe(discovery.RequestSubject(alg), "runners", func(m *nats.Msg) {
		reply := &nats.Msg{Subject: m.Reply, Data: []byte(`{"output_ref":"` + ref + `"}`), Header: nats.Header{}}
		reply.Header.Set(protocol.HeaderInstance, instance)
		reply.Header.Set(protocol.HeaderOutputRef, ref)
		_ = nc.PublishMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// An output stored by reference is checked against the registered output
// schema like one in the reply: a reference is no way around the check. A
// referenced output that does not match, is missing, or is larger than
// MaxReferencedOutputBytes fails with 502 after the attempts; one that
// matches succeeds with output_ref. So does a reference outside the
// algorithm's own outputs bucket — another algorithm's, or the
// controller's — even to an output that would match: the runners of an
// algorithm may write no other bucket, so such an output is not theirs.
func TestReferencedOutputsAreCheckedReliability(t *testing.T) {
	algs := []string{"good", "stolen", "missing", "big", "elsewhere", "controllers"}
	e := newEnv(t, controller.StoreConfig{OutputAlgorithms: algs})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put := func(bucket, name, body string) objref.Ref {
		ref, err := objref.Put(ctx, e.js, bucket, name, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return ref
	}
	refs := map[string]objref.Ref{
		"good":        put(objref.OutputsBucketFor("good"), "1", `{"n":1}`),
		"stolen":      put(objref.OutputsBucketFor("stolen"), "1", `{"stolen":true}`),
		"missing":     {Bucket: objref.OutputsBucketFor("missing"), Name: "1"},
		"big":         put(objref.OutputsBucketFor("big"), "1", `{"n":1,"pad":"`+strings.Repeat("x", 4096)+`"}`),
		"elsewhere":   {Bucket: objref.OutputsBucketFor("good"), Name: "1"},
		"controllers": put(controller.OutputsBucket, "controllers/1", `{"n":1}`),
	}
	for _, alg := range algs {
		putRecord(t, e, alg, "fake-"+alg)
		refRunner(t, e, alg, "fake-"+alg, refs[alg])
	}
	cfg := fastConfig(t)
	cfg.MaxAttempts = 2
	cfg.MaxReferencedOutputBytes = 1024
	startController(t, e, cfg)
	for _, alg := range algs {
		e.submit(t, alg, alg+"-job", echoIn{N: 1})
	}

	r := e.waitResult(t, "good-job")
	if r.Status != controller.StatusSucceeded || r.OutputRef != "obj://outputs_good/1" {
		t.Errorf("good-job: status %s error %v output_ref %q, want succeeded by reference", r.Status, r.Error, r.OutputRef)
	}
	for _, alg := range []string{"elsewhere", "controllers"} {
		r := e.waitResult(t, alg+"-job")
		if r.Error == nil || !strings.Contains(r.Error.Message, "not a reference into bucket outputs_"+alg) {
			t.Errorf("%s-job: error %+v, want the reference refused as outside bucket outputs_%s", alg, r.Error, alg)
		}
	}
	for _, alg := range []string{"stolen", "missing", "big", "elsewhere", "controllers"} {
		r := e.waitResult(t, alg+"-job")
		if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != protocol.CodeBadGateway || r.Attempts != cfg.MaxAttempts {
			t.Errorf("%s-job: status %s error %v attempts %d output_ref %q, want failed with 502 after %d attempts",
				alg, r.Status, r.Error, r.Attempts, r.OutputRef, cfg.MaxAttempts)
		}
	}
	if r := e.waitResult(t, "stolen-job"); r.Error != nil && len(r.Error.Violations) == 0 {
		t.Errorf("stolen-job: error %+v, want the schema violations", r.Error)
	}
}
