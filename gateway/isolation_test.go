package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
)

// send is a request with full control over the headers a browser sets
// itself: Host, Origin and Content-Type (ctype "" sends none).
func (s *stack) send(t *testing.T, method, path string, body io.Reader, ctype, host, origin string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{resp, b}
}

// A web page the user of a token-less gateway visits must not be able to
// use it: not by posting to it from another origin, not by rebinding its
// own name to 127.0.0.1 and reading the answers, not with a form. The
// dashboard's own requests (same origin, JSON, octet-stream uploads, a
// body-less replay) and curl's (no Origin) keep working.
func TestCrossSiteRequestsRefusedReliability(t *testing.T) {
	s := newStack(t, stackOpts{})
	s.failing.Store(true)
	if r := s.do(t, "POST", "/v1/algorithms/probe/jobs", `{}`, map[string]string{"Idempotency-Key": "xsite"}); r.StatusCode != 202 {
		t.Fatalf("submit: %d %s", r.StatusCode, r.body)
	}
	if r := s.do(t, "GET", "/v1/jobs/xsite?wait=20s", "", nil); !strings.Contains(string(r.body), `"failed"`) {
		t.Fatalf("job did not fail: %s", r.body)
	}
	s.failing.Store(false)
	self := strings.TrimPrefix(s.url, "http://")
	port := self[strings.LastIndex(self, ":"):]
	const evil = "http://evil.example"
	cases := []struct {
		name, method, path, body, ctype, host, origin string
		status                                        int
	}{
		// A page of another site posting as a form or no-cors fetch would.
		{"run from another origin", "POST", "/v1/algorithms/probe/run", `{}`, "text/plain", "", evil, 403},
		{"job from another origin", "POST", "/v1/algorithms/probe/jobs", `{}`, "text/plain", "", evil, 403},
		{"upload from another origin", "POST", "/v1/objects", "x", "text/plain", "", evil, 403},
		{"replay from another origin", "POST", "/v1/dead/xsite/replay", "", "", "", evil, 403},
		{"json run from another origin", "POST", "/v1/algorithms/probe/run", `{}`, "application/json", "", evil, 403},
		{"origin null", "POST", "/v1/algorithms/probe/run", `{}`, "application/json", "", "null", 403},
		{"origin of another port", "POST", "/v1/algorithms/probe/run", `{}`, "application/json", "", "http://127.0.0.1:1", 403},
		// DNS rebinding: the page's own name, resolving to 127.0.0.1.
		{"rebound name runs", "POST", "/v1/algorithms/probe/run", `{}`, "text/plain", "evil.example" + port, evil, 403},
		{"rebound name reads results", "GET", "/v1/jobs/xsite", "", "", "evil.example" + port, "", 403},
		{"rebound name reads dead letters", "GET", "/v1/dead", "", "", "evil.example", "", 403},
		{"rebound name reads events", "GET", "/v1/events", "", "", "evil.example" + port, "", 403},
		{"rebound name loads the dashboard", "GET", "/", "", "", "evil.example" + port, "", 403},
		{"name that merely starts with localhost", "GET", "/v1/queues", "", "", "localhost.evil.example" + port, "", 403},
		// Bodies a cross-site form can send without asking first.
		{"text/plain run", "POST", "/v1/algorithms/probe/run", `{}`, "text/plain", "", "", 415},
		{"form-urlencoded job", "POST", "/v1/algorithms/probe/jobs", `{}`, "application/x-www-form-urlencoded", "", "", 415},
		{"run without a type", "POST", "/v1/algorithms/probe/run", `{}`, "", "", "", 415},
		{"text/plain upload", "POST", "/v1/objects", "x", "text/plain", "", "", 415},
		{"multipart upload", "POST", "/v1/objects", "x", "multipart/form-data; boundary=x", "", "", 415},
		{"replay with a form body", "POST", "/v1/dead/xsite/replay", "a=b", "application/x-www-form-urlencoded", "", "", 415},
		// What the dashboard and curl send.
		{"same-origin run", "POST", "/v1/algorithms/probe/run", `{}`, "application/json", "", s.url, 200},
		{"same-origin run by localhost", "POST", "/v1/algorithms/probe/run", `{}`, "application/json", "localhost" + port, "http://localhost" + port, 200},
		{"a .localhost name", "GET", "/v1/queues", "", "", "pnp.localhost" + port, "", 200},
		{"IPv6 loopback", "GET", "/v1/queues", "", "", "[::1]" + port, "", 200},
		{"any +json type", "POST", "/v1/algorithms/probe/run", `{}`, "application/merge-patch+json", "", "", 200},
		{"curl upload", "POST", "/v1/objects?filename=a.bin", "bytes", "application/octet-stream", "", "", 201},
		{"dashboard upload", "POST", "/v1/objects", "bytes", "image/png", "", s.url, 201},
		{"curl run", "POST", "/v1/algorithms/probe/run", `{}`, "application/json", "", "", 200},
		{"same-origin GET without Origin", "GET", "/v1/dead", "", "", "", "", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = http.NoBody
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			r := s.send(t, tc.method, tc.path, body, tc.ctype, tc.host, tc.origin)
			if tc.status >= 400 {
				expectProblem(t, r, tc.status)
				return
			}
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", r.StatusCode, tc.status, r.body)
			}
		})
	}
	// The one allowed replay: same origin, no body (as the dashboard's
	// button sends it). It comes last: it consumes the dead letter.
	if r := s.send(t, "POST", "/v1/dead/xsite/replay", http.NoBody, "", "", s.url); r.StatusCode != 202 {
		t.Fatalf("same-origin replay: %d %s", r.StatusCode, r.body)
	}
}

// With a token the gateway may be reached under any name, but a page of
// another origin is still refused, token or not (the configured CORS
// origin excepted).
func TestOriginCheckedWithTokenReliability(t *testing.T) {
	s := newStack(t, stackOpts{token: "s3cret"})
	if r := s.send(t, "GET", "/v1/queues", http.NoBody, "", "gateway.example.org", ""); r.StatusCode != 200 {
		t.Fatalf("any host with the token: %d %s", r.StatusCode, r.body)
	}
	expectProblem(t, s.send(t, "POST", "/v1/algorithms/probe/run", strings.NewReader(`{}`), "application/json", "", "http://evil.example"), 403)
	if r := s.send(t, "POST", "/v1/algorithms/probe/run", strings.NewReader(`{}`), "application/json", "gw.example:443", "https://gw.example:443"); r.StatusCode != 200 {
		t.Fatalf("same origin behind TLS: %d %s", r.StatusCode, r.body)
	}
}

// The dead-letter listing leaves no consumer behind: before, each GET
// /v1/dead (which an open dashboard sends on every job event) left an
// ordered consumer on DEAD for 5 minutes, until the server's consumer
// limits refused listing and replay to everyone.
func TestDeadListingLeavesNoConsumerReliability(t *testing.T) {
	s := newStack(t, stackOpts{})
	s.failing.Store(true)
	for i := range 3 {
		id := fmt.Sprintf("dead-%d", i)
		if r := s.do(t, "POST", "/v1/algorithms/probe/jobs", `{}`, map[string]string{"Idempotency-Key": id}); r.StatusCode != 202 {
			t.Fatalf("submit: %d %s", r.StatusCode, r.body)
		}
		if r := s.do(t, "GET", "/v1/jobs/"+id+"?wait=20s", "", nil); !strings.Contains(string(r.body), `"failed"`) {
			t.Fatalf("job did not fail: %s", r.body)
		}
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := js.Stream(context.Background(), jobs.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		var letters []json.RawMessage
		r := s.do(t, "GET", "/v1/dead", "", nil)
		mustJSON(t, r.body, &letters)
		if len(letters) != 3 {
			t.Fatalf("GET /v1/dead listed %d letters, want 3: %s", len(letters), r.body)
		}
	}
	if r := s.do(t, "GET", "/v1/dead?algorithm=probe", "", nil); r.StatusCode != 200 {
		t.Fatalf("filtered listing: %d %s", r.StatusCode, r.body)
	}
	s.failing.Store(false)
	if r := s.do(t, "POST", "/v1/dead/dead-0/replay", "", nil); r.StatusCode != 202 {
		t.Fatalf("replay: %d %s", r.StatusCode, r.body)
	}
	consumers := func() int {
		info, err := dead.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	eventually(t, func() bool { return consumers() == 0 }, "DEAD has no consumer left after 22 listings")
}

// hostile serves "hostile", registered with probe's schemas, from a raw
// NATS responder whose reply the request body chooses.
type hostileIn struct {
	Body    string            `json:"body"`
	Header  map[string]string `json:"header"`
	NoReply bool              `json:"no_reply"`
}

func startHostile(t *testing.T, s *stack, timeout time.Duration) {
	t.Helper()
	var algs []json.RawMessage
	mustJSON(t, s.do(t, "GET", "/v1/algorithms", "", nil).body, &algs)
	rec := discovery.Registration{
		Algorithm: "hostile", Version: "1.0.0", Instance: "hostile1", Subject: protocol.SubjectPrefix + "hostile", QueueGroup: "runners",
		InputSchema: json.RawMessage(`{}`), OutputSchema: json.RawMessage(probeOutputSchema), TimeoutMS: timeout.Milliseconds(), MaxConcurrency: 8,
		StartedAt: time.Now().UTC(), HeartbeatAt: time.Now().UTC(),
	}
	if err := s.store.Registry().Register(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	nc := s.srv.Connect()
	sub, err := nc.QueueSubscribe(rec.Subject, rec.QueueGroup, func(m *nats.Msg) {
		var in hostileIn
		_ = json.Unmarshal(m.Data, &in)
		if in.NoReply {
			return
		}
		reply := &nats.Msg{Header: nats.Header{}, Data: []byte(in.Body)}
		for k, v := range in.Header {
			reply.Header[k] = []string{v}
		}
		_ = m.RespondMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s.waitAlgorithms(t, len(algs)+1)
}

// Whatever answers on run.<algorithm> is checked as the controller checks
// it before the gateway answers: before, an HTML page came back as
// 200 application/json without nosniff, any code (101, 204, 302, 999) was
// the HTTP status (1000 or -5 a recovered panic answering an empty 200),
// and every Pnp-* header was passed on.
func TestRunnerRepliesAreCheckedReliability(t *testing.T) {
	s := newStack(t, stackOpts{})
	startHostile(t, s, 5*time.Second)
	html := `<html><script>alert(document.cookie)</script></html>`
	errBody := func(code int) string { return fmt.Sprintf(`{"code":%d,"message":"odd"}`, code) }
	cases := []struct {
		name    string
		in      hostileIn
		status  int
		pointer string
	}{
		{"HTML as a success", hostileIn{Body: html, Header: map[string]string{"Pnp-Instance": "hostile1"}}, 502, ""},
		{"HTML naming no instance", hostileIn{Body: html}, 502, ""},
		{"JSON against the output schema", hostileIn{Body: `{"ok":"yes"}`, Header: map[string]string{"Pnp-Instance": "hostile1"}}, 502, "/ok"},
		{"output by reference outside outputs", hostileIn{Body: `{"output_ref":"obj://inputs/x"}`, Header: map[string]string{"Pnp-Instance": "hostile1", "Pnp-Output-Ref": "obj://inputs/x"}}, 502, ""},
		{"code 101", hostileIn{Body: errBody(101), Header: map[string]string{"Nats-Service-Error-Code": "101"}}, 500, ""},
		{"code 204", hostileIn{Body: "", Header: map[string]string{"Nats-Service-Error-Code": "204", "Nats-Service-Error": "no content"}}, 500, ""},
		{"code 302", hostileIn{Body: "", Header: map[string]string{"Nats-Service-Error-Code": "302", "Nats-Service-Error": "moved"}}, 500, ""},
		{"code 999", hostileIn{Body: errBody(999), Header: map[string]string{"Nats-Service-Error-Code": "999"}}, 500, ""},
		{"code 1000", hostileIn{Body: errBody(1000), Header: map[string]string{"Nats-Service-Error-Code": "1000"}}, 500, ""},
		{"code -5", hostileIn{Body: errBody(-5), Header: map[string]string{"Nats-Service-Error-Code": "-5"}}, 500, ""},
		{"code 418", hostileIn{Body: errBody(418), Header: map[string]string{"Nats-Service-Error-Code": "418"}}, 400, ""},
		{"code 503 passes", hostileIn{Body: errBody(503), Header: map[string]string{"Nats-Service-Error-Code": "503"}}, 503, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := json.Marshal(tc.in)
			r := s.do(t, "POST", "/v1/algorithms/hostile/run", string(b), nil)
			p := expectProblem(t, r, tc.status)
			if r.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("no nosniff: %v", r.Header)
			}
			if strings.Contains(string(r.body), "<script>") {
				t.Fatalf("the runner's HTML reached the caller: %s", r.body)
			}
			if tc.pointer != "" && (len(p.Violations) == 0 || p.Violations[0].Pointer != tc.pointer) {
				t.Fatalf("violations %+v, want one at %s", p.Violations, tc.pointer)
			}
		})
	}
	t.Run("only documented headers pass", func(t *testing.T) {
		in := hostileIn{Body: `{"ok":true}`, Header: map[string]string{
			"Pnp-Instance": "hostile1", "Pnp-Version": "1.0.0", "Pnp-Algorithm": "hostile",
			"Pnp-Evil": "1", "Pnp-Deadline": "2000-01-01T00:00:00Z", "Pnp-Input-Ref": "obj://inputs/forged",
			"Pnp-Job-Id": strings.Repeat("j", 100), "Set-Cookie": "pnp_token=stolen",
		}}
		b, _ := json.Marshal(in)
		r := s.do(t, "POST", "/v1/algorithms/hostile/run", string(b), nil)
		if r.StatusCode != 200 || string(bytes.TrimSpace(r.body)) != `{"ok":true}` {
			t.Fatalf("valid output: %d %s", r.StatusCode, r.body)
		}
		if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("success headers %v", r.Header)
		}
		if r.Header.Get("Pnp-Instance") != "hostile1" || r.Header.Get("Pnp-Version") != "1.0.0" || r.Header.Get("Pnp-Algorithm") != "hostile" {
			t.Fatalf("documented headers not passed: %v", r.Header)
		}
		for _, k := range []string{"Pnp-Evil", "Pnp-Deadline", "Pnp-Input-Ref", "Pnp-Job-Id", "Set-Cookie"} {
			if v := r.Header.Get(k); v != "" {
				t.Errorf("reply header %s: %q passed on", k, v)
			}
		}
	})
	t.Run("an output by reference is read back and checked", func(t *testing.T) {
		js, err := jetstream.New(s.nc)
		if err != nil {
			t.Fatal(err)
		}
		if err := objref.EnsureBucket(context.Background(), js, objref.OutputsConfig("hostile", 0, 0, 1)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			bucket string
			output string
			status int
		}{
			{objref.OutputsBucketFor("hostile"), `{"ok":true}`, 200},
			{objref.OutputsBucketFor("hostile"), `{"ok":"yes"}`, 502},
			{objref.OutputsBucketFor("hostile"), `<html></html>`, 502},
			// the controller's own bucket is not the algorithm's: a runner
			// cannot point at an output it did not store.
			{jobs.OutputsBucket, `{"ok":true}`, 502},
		} {
			ref, err := objref.Put(context.Background(), js, c.bucket, "hostile/"+nuid.Next(), strings.NewReader(c.output))
			if err != nil {
				t.Fatal(err)
			}
			body := fmt.Sprintf(`{"output_ref":%q}`, ref.String())
			in := hostileIn{Body: body, Header: map[string]string{"Pnp-Instance": "hostile1", "Pnp-Output-Ref": ref.String()}}
			b, _ := json.Marshal(in)
			r := s.do(t, "POST", "/v1/algorithms/hostile/run", string(b), nil)
			if c.status != 200 {
				expectProblem(t, r, c.status)
				continue
			}
			if r.StatusCode != 200 || r.Header.Get("Pnp-Output-Ref") != ref.String() || string(bytes.TrimSpace(r.body)) != body {
				t.Fatalf("valid output by reference: %d %v %s", r.StatusCode, r.Header, r.body)
			}
		}
	})
	t.Run("an oversized instance header is dropped", func(t *testing.T) {
		in := hostileIn{Body: `{"ok":true}`, Header: map[string]string{"Pnp-Instance": strings.Repeat("i", 4000)}}
		b, _ := json.Marshal(in)
		r := s.do(t, "POST", "/v1/algorithms/hostile/run", string(b), nil)
		if r.StatusCode != 200 || r.Header.Get("Pnp-Instance") != "" {
			t.Fatalf("%d, Pnp-Instance of %d bytes", r.StatusCode, len(r.Header.Get("Pnp-Instance")))
		}
	})
}

// When nothing answers within the algorithm's time budget (plus the
// reply's travel slack) the gateway's own timeout answers: 504, the
// protocol's code for a deadline (docs/PROTOCOL.md), never 503, which
// says overloaded or draining.
func TestGatewayTimeoutIs504(t *testing.T) {
	s := newStack(t, stackOpts{noProbe: true})
	startHostile(t, s, 300*time.Millisecond)
	b, _ := json.Marshal(hostileIn{NoReply: true})
	for _, hdr := range []map[string]string{nil, {"Pnp-Timeout": "100ms"}} {
		p := expectProblem(t, s.do(t, "POST", "/v1/algorithms/hostile/run", string(b), hdr), 504)
		if !strings.Contains(p.Message, "no reply from hostile within") {
			t.Fatalf("message %q, want the gateway's own timeout", p.Message)
		}
	}
}

// An upload over the cap is refused with 413 also when it does not say
// its length (chunked), for a plain upload and a multipart run, and the
// next request on the same server still works.
func TestChunkedUploadOverTheCapIs413(t *testing.T) {
	s := newStack(t, stackOpts{maxUpload: 64 << 10})
	big := bytes.Repeat([]byte("x"), 256<<10)
	chunked := func() io.Reader { return io.MultiReader(bytes.NewReader(big)) } // no length known
	r := s.send(t, "POST", "/v1/objects", chunked(), "application/octet-stream", "", "")
	p := expectProblem(t, r, 413)
	if !strings.Contains(p.Message, "65536") {
		t.Fatalf("message %q does not name the limit", p.Message)
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	fw, _ := mw.CreateFormFile("file", "big.bin")
	_, _ = fw.Write(big)
	_ = mw.Close()
	r = s.send(t, "POST", "/v1/algorithms/probe/run", io.MultiReader(&form), mw.FormDataContentType(), "", "")
	expectProblem(t, r, 413)
	if r := s.send(t, "POST", "/v1/objects", chunked(), "application/octet-stream", "", ""); r.StatusCode != 413 {
		t.Fatalf("second chunked upload: %d", r.StatusCode)
	}
	if r := s.send(t, "POST", "/v1/objects", io.MultiReader(bytes.NewReader(big[:1000])), "application/octet-stream", "", ""); r.StatusCode != 201 {
		t.Fatalf("chunked upload under the cap: %d %s", r.StatusCode, r.body)
	}
}

// Open event streams are bounded: past the limit a new one is refused
// with a 503 naming it, and a stream that closes frees its slot.
func TestEventStreamsAreBoundedReliability(t *testing.T) {
	s := newStack(t, stackOpts{maxEventStreams: 2})
	a := s.openEvents(t)
	s.openEvents(t)
	p := expectProblem(t, s.do(t, "GET", "/v1/events", "", nil), 503)
	if !strings.Contains(p.Message, "limit of 2") {
		t.Fatalf("message %q does not name the limit", p.Message)
	}
	a.resp.Body.Close()
	eventually(t, func() bool {
		r := s.do(t, "GET", "/v1/algorithms", "", nil) // a request that always ends
		if r.StatusCode != 200 {
			return false
		}
		req, _ := http.NewRequest("GET", s.url+"/v1/events", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == 200
	}, "a closed stream frees its slot")
}

// Uploads in progress are bounded, and one that stalls is cut off once it
// falls under the minimum rate (after 10 s of grace) instead of holding
// its slot for 10 minutes.
func TestStalledUploadsAreCutOffReliability(t *testing.T) {
	s := newStack(t, stackOpts{maxUploads: 1, uploadMinRate: 1 << 20})
	// stall sends the headers and a few bytes of a 1 MB upload, then
	// nothing.
	stall := func() (net.Conn, *bufio.Reader) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /v1/objects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\nfirst bytes")
		return conn, bufio.NewReader(conn)
	}
	conn, br := stall()
	defer func() { conn.Close() }()
	eventually(t, func() bool {
		r := s.send(t, "POST", "/v1/objects", strings.NewReader("another"), "application/octet-stream", "", "")
		if r.StatusCode != 503 {
			// The probe may have held the slot when the stalled upload
			// arrived (a loaded machine): then the stalled one was
			// refused, and is sent again.
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			if _, err := br.Peek(1); err == nil {
				conn.Close()
				conn, br = stall()
			}
			return false
		}
		p := expectProblem(t, r, 503)
		if !strings.Contains(p.Message, "limit of 1") {
			t.Fatalf("message %q does not name the limit", p.Message)
		}
		return true
	}, "a second upload is refused while the first holds the only slot")
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the stalled upload got no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 408 || !strings.Contains(string(b), "too slow") {
		t.Fatalf("stalled upload: %d %s, want 408", resp.StatusCode, b)
	}
	eventually(t, func() bool {
		return s.send(t, "POST", "/v1/objects", strings.NewReader("another"), "application/octet-stream", "", "").StatusCode == 201
	}, "the slot is free again")
}
