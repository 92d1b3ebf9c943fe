package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/gateway"
)

// roleMaxUpload is the upload limit of the gateway under test.
const roleMaxUpload = 1 << 20

// startGatewayRole serves the gateway on a loopback port under the
// gateway user of nats.conf and returns its URL.
func startGatewayRole(t *testing.T, d *deployment) (string, *client) {
	t.Helper()
	c := connect(t, d.url, "gateway")
	ctx, cancel := context.WithCancel(context.Background())
	store, err := controller.OpenStore(ctx, c.js(t), controller.StoreConfig{})
	if err != nil {
		cancel()
		t.Fatalf("gateway opens the store: %v", err)
	}
	gw, err := gateway.New(c.Conn, store, gateway.Config{Logger: zerolog.Nop(), MaxUpload: roleMaxUpload})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	<-gw.Ready()
	return "http://" + ln.Addr().String(), c
}

func httpDo(t *testing.T, method, url, body string, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestGatewayRoleAllowed uses every route of the gateway under the
// gateway user: none may meet a permission violation.
func TestGatewayRoleAllowed(t *testing.T) {
	d := startDeployment(t)
	base, c := startGatewayRole(t, d)

	events, err := http.Get(base + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer events.Body.Close()
	jobEvent := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(events.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") && strings.Contains(sc.Text(), `"job_id"`) {
				jobEvent <- sc.Text()
			}
		}
	}()

	check := func(name string, wantCode int, method, path, body string, hdr map[string]string, want string) {
		t.Helper()
		code, b := httpDo(t, method, base+path, body, hdr)
		if code != wantCode || !strings.Contains(string(b), want) {
			t.Fatalf("%s: %d %s; want %d with %q", name, code, b, wantCode, want)
		}
	}
	check("readyz", 200, "GET", "/readyz", "", nil, "ready")
	check("algorithms with stats", 200, "GET", "/v1/algorithms?stats=1", "", nil, `"replies":1`)
	check("run", 200, "POST", "/v1/algorithms/language_detection/run", `{"text":"Guten Morgen, wie geht es dir heute?"}`, nil, `"de`)
	check("openapi", 200, "GET", "/openapi.json", "", nil, "/v1/algorithms/language_detection/run")
	check("submit", 202, "POST", "/v1/algorithms/language_detection/jobs", `{"txt":1}`, map[string]string{"Idempotency-Key": "gw-bad"}, "gw-bad")
	check("long-poll", 200, "GET", "/v1/jobs/gw-bad?wait=20s", "", nil, `"failed"`)
	check("list jobs", 200, "GET", "/v1/jobs?status=failed&algorithm=language_detection", "", nil, `"job_id":"gw-bad"`)
	check("dead letters", 200, "GET", "/v1/dead", "", nil, "gw-bad")
	check("queues", 200, "GET", "/v1/queues", "", nil, `"dead":1`)
	check("replay", 202, "POST", "/v1/dead/gw-bad/replay", "", nil, "gw-bad")
	// The replayed job fails again (its input is still invalid): a new
	// outcome, after the replay removed the old one.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, b := httpDo(t, "GET", base+"/v1/jobs/gw-bad?wait=5s", "", nil)
		var r struct{ Attempts int }
		_ = json.Unmarshal(b, &r)
		if code == 200 && strings.Contains(string(b), `"failed"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replayed job: %d %s", code, b)
		}
	}
	select {
	case <-jobEvent:
	case <-time.After(10 * time.Second):
		t.Fatal("no job event under the gateway role")
	}
	// Data by reference: upload to uploads, the gateway's own bucket,
	// read it back; read a producer's input and the outputs (a missing
	// object is a 404, not a permission error).
	code, b := httpDo(t, "POST", base+"/v1/objects?filename=a.txt", "some bytes", nil)
	var obj struct{ Ref string }
	if code != 201 || json.Unmarshal(b, &obj) != nil || !strings.HasPrefix(obj.Ref, "obj://uploads/") {
		t.Fatalf("upload: %d %s", code, b)
	}
	check("download an upload", 200, "GET", "/v1/objects/"+strings.TrimPrefix(obj.Ref, "obj://"), "", nil, "some bytes")
	in, err := d.store.PutInput(context.Background(), "gw/in.txt", strings.NewReader("a producer's bytes"))
	if err != nil {
		t.Fatal(err)
	}
	check("download a producer's input", 200, "GET", "/v1/objects/"+strings.TrimPrefix(in.String(), "obj://"), "", nil, "a producer's bytes")
	// An upload over the limit is refused and leaves nothing behind: the
	// chunks it wrote are purged (which the role must allow), at once.
	inputs, err := c.js(t).Stream(context.Background(), "OBJ_uploads")
	if err != nil {
		t.Fatal(err)
	}
	before, err := inputs.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", base+"/v1/objects", io.MultiReader(strings.NewReader(strings.Repeat("x", 3*roleMaxUpload))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || time.Since(start) > 3*time.Second {
		t.Fatalf("upload over the limit: %d after %s; want 413 at once", resp.StatusCode, time.Since(start))
	}
	after, err := inputs.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after.State.Msgs != before.State.Msgs {
		t.Errorf("OBJ_uploads holds %d messages after a refused upload, %d before: its chunks stayed", after.State.Msgs, before.State.Msgs)
	}
	check("a missing output", 404, "GET", "/v1/objects/outputs/none", "", nil, "no object")
	check("a missing output of an algorithm", 404, "GET", "/v1/objects/outputs_language_detection/none", "", nil, "no object")
	check("output of a failed job", 409, "GET", "/v1/jobs/gw-bad/output", "", nil, "is failed")
	// Cancel: a finished job (its record), an unknown one (a look through
	// JOBS), and a fresh one (the cancelled record and the runners' cancel
	// subject) — cancelled, or finished first.
	check("cancel of a finished job", 409, "DELETE", "/v1/jobs/gw-bad", "", nil, `"job_status":"failed"`)
	check("cancel of an unknown job", 404, "DELETE", "/v1/jobs/gw-none", "", nil, "no job gw-none")
	check("submit to cancel", 202, "POST", "/v1/algorithms/language_detection/jobs", `{"text":"Guten Morgen, wie geht es dir heute?"}`, map[string]string{"Idempotency-Key": "gw-cancel"}, "gw-cancel")
	if code, b := httpDo(t, "DELETE", base+"/v1/jobs/gw-cancel", "", nil); code != 200 && code != 409 {
		t.Fatalf("cancel: %d %s", code, b)
	}
	check("unknown algorithm", 404, "POST", "/v1/algorithms/language_detecton/jobs", `{}`, nil, "did you mean language_detection")
	c.expectClean(t)
	d.runnerC.expectClean(t)
}

// TestGatewayRoleDenied checks what the gateway user may not do.
func TestGatewayRoleDenied(t *testing.T) {
	d := startDeployment(t)
	publishes := []string{
		"$KV.discovery.language_detection.fake", // write discovery
		"$JS.API.CONSUMER.CREATE.JOBS",          // consume jobs
		"$JS.API.STREAM.DELETE.JOBS",            // delete a stream
		"$JS.API.STREAM.CREATE.EVIL",            // create a stream
		"dead.language_detection",               // write a dead letter
		"_INBOX_controller.forged",              // forge a reply
		"$SRV.PING",                             // more of the control plane than stats
	}
	// Object stores other than its own bucket uploads: writing them
	// would let a roll-up empty them.
	publishes = append(publishes, "$O.inputs.C.forged", "$JS.API.STREAM.PURGE.OBJ_inputs", "$O.outputs.M.forged", "$O.outputs_language_detection.C.forged")
	for _, subj := range publishes {
		t.Run("publish "+subj, func(t *testing.T) {
			c := connect(t, d.url, "gateway")
			if err := c.Publish(subj, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			c.expectDenied(t, subj)
		})
	}
	for _, subj := range []string{"run.language_detection", "_INBOX_producer.>", "_INBOX.>", "jobs.>"} {
		t.Run("subscribe "+subj, func(t *testing.T) {
			c := connect(t, d.url, "gateway")
			sub, err := c.QueueSubscribeSync(subj, "runners")
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			c.expectDenied(t, subj)
		})
	}
	t.Run("admin forges a reply into the gateway's inbox", func(t *testing.T) {
		c := connect(t, d.url, "admin")
		if err := c.Publish("_INBOX_gateway.forged", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		c.expectDenied(t, "_INBOX_gateway.forged")
	})
}
