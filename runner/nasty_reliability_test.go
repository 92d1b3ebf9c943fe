package runner_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// Hostile request bodies, sent over real NATS to a running runner: each gets
// a clear 400 (code header and a JSON error body that fits a message), and
// the runner keeps serving.
func TestNastyInputsReliability(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, nc, []*runner.Algorithm{wordCount(t, nil)})
	maxPayload := int(nc.MaxPayload())
	// Room for the request's headers and subject inside max_payload.
	below := maxPayload - 512

	nest := func(open, close string, n int) string {
		return strings.Repeat(open, n) + strings.Repeat(close, n)
	}
	cases := []struct {
		name string
		body string
		want int // 0: served
	}{
		{"just below max payload, valid", `{"text":"` + strings.Repeat("a ", (below-12)/2) + `"}`, 0},
		{"just below max payload, malformed", `{"text":"` + strings.Repeat("a", below-12), 400},
		{"just below max payload, one huge unknown field", `{"text":"x","bad":[` + strings.Repeat(`1,`, (below-40)/2) + `1]}`, 400},
		{"many unknown fields", `{"text":"x",` + strings.Repeat(`"k":1,`, 2000) + `"z":1}`, 400},
		{"nested arrays 10k", nest("[", "]", 10_000), 400},
		{"nested arrays 100k", nest("[", "]", 100_000), 400},
		{"nested objects in a field 10k", `{"text":` + strings.Repeat(`{"a":`, 10_000) + `1` + strings.Repeat(`}`, 10_000) + `}`, 400},
		{"unclosed nesting", strings.Repeat("[", 50_000), 400},
		{"invalid UTF-8 outside strings", "{\"text\":\"x\"}\xff", 400},
		{"lone surrogate escape", `{"text":"\ud800"}`, 0},
		{"NUL byte", "{\"text\":\"x\"\x00}", 400},
		{"huge float", `{"text":"x","sleep_ms":1e400}`, 400},
		{"64-digit integer", `{"text":"x","sleep_ms":1234567890123456789012345678901234567890123456789012345678901234}`, 400},
		{"negative huge integer", `{"text":"x","sleep_ms":-1234567890123456789012345678901234567890123456789012345678901234}`, 400},
		{"integral float for an integer", `{"text":"x","sleep_ms":1.0}`, 400},
		{"fraction for an integer", `{"text":"x","sleep_ms":0.5}`, 400},
		{"NaN", `{"text":"x","sleep_ms":NaN}`, 400},
		{"text number", `{"text":42}`, 400},
		{"text bool", `{"text":true}`, 400},
		{"text null", `{"text":null}`, 400},
		{"text array", `{"text":["a"]}`, 400},
		{"text object", `{"text":{"a":"b"}}`, 400},
		{"text empty", `{"text":""}`, 400},
		{"sleep_ms string", `{"text":"x","sleep_ms":"10"}`, 400},
		{"sleep_ms negative", `{"text":"x","sleep_ms":-1}`, 400},
		{"sleep_ms bool", `{"text":"x","sleep_ms":true}`, 400},
		{"mode number", `{"text":"x","mode":1}`, 400},
		{"unknown field", `{"text":"x","extra":1}`, 400},
		{"body array", `["text"]`, 400},
		{"body string", `"text"`, 400},
		{"body number", `42`, 400},
		{"body null", `null`, 400},
		{"body empty", ``, 400},
		{"two documents", `{"text":"x"}{"text":"y"}`, 400},
		{"duplicate key, last wrong", `{"text":"x","text":7}`, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := request(t, nc, tc.body, nil)
			code := msg.Header.Get(protocol.HeaderErrorCode)
			if tc.want == 0 {
				if code != "" {
					t.Fatalf("code %s (%s), want a success", code, msg.Header.Get(protocol.HeaderError))
				}
				return
			}
			if code != fmt.Sprint(tc.want) {
				t.Fatalf("code %q (%s), want %d", code, msg.Header.Get(protocol.HeaderError), tc.want)
			}
			var e runner.Error
			if err := json.Unmarshal(msg.Data, &e); err != nil || e.Code != tc.want || e.Message == "" {
				t.Fatalf("error body %.200q: %v", msg.Data, err)
			}
			if len(msg.Data) > maxPayload {
				t.Fatalf("error reply of %d bytes", len(msg.Data))
			}
		})
	}
	// Still alive and serving.
	if msg := request(t, nc, `{"text":"still here"}`, nil); string(msg.Data) != `{"words":2}` {
		t.Fatalf("after the nasty inputs: %s", msg.Data)
	}
}

// A body with 50 000 real schema violations, one per array item: the error
// reply lists the first 100 (sorted by pointer) and then one entry that
// says how many more there were, and fits in a message.
func TestViolationCapReliability(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "sum", Version: "1.0.0",
		InputSchema: []byte(`{"type":"object","required":["items"],"additionalProperties":false,
		  "properties":{"items":{"type":"array","items":{"type":"integer","minimum":0}}}}`),
		OutputSchema: []byte(`{"type":"object","required":["sum"],"properties":{"sum":{"type":"integer"}}}`),
	}, func(_ context.Context, in struct {
		Items []int `json:"items"`
	}) (any, error) {
		sum := 0
		for _, v := range in.Items {
			sum += v
		}
		return map[string]int{"sum": sum}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	start(t, nc, []*runner.Algorithm{a})
	const bad = 50_000
	body := `{"items":[` + strings.Repeat(`-1,`, bad-1) + `-1]}`
	msg, err := nc.RequestMsg(&nats.Msg{Subject: "run.sum", Data: []byte(body)}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := msg.Header.Get(protocol.HeaderErrorCode); code != "400" {
		t.Fatalf("code %q (%s), want 400", code, msg.Header.Get(protocol.HeaderError))
	}
	var e runner.Error
	if err := json.Unmarshal(msg.Data, &e); err != nil {
		t.Fatalf("error body %.200q: %v", msg.Data, err)
	}
	if len(e.Violations) != 101 {
		t.Fatalf("%d violations in the reply, want 100 and a summary", len(e.Violations))
	}
	seen := map[string]bool{}
	for _, v := range e.Violations[:100] {
		if !strings.HasPrefix(v.Pointer, "/items/") || !strings.Contains(v.Message, ">= 0") || seen[v.Pointer] {
			t.Fatalf("violation %+v: want a distinct item below its minimum", v)
		}
		seen[v.Pointer] = true
	}
	if last := e.Violations[100]; last.Pointer != "" || last.Message != fmt.Sprintf("… and %d more violations", bad-100) {
		t.Fatalf("last entry %+v, want the count of the %d left out", last, bad-100)
	}
	if len(msg.Data) > 64<<10 {
		t.Fatalf("error reply of %d bytes for a capped list", len(msg.Data))
	}
	ok, err := nc.Request("run.sum", []byte(`{"items":[1,2,3]}`), 10*time.Second)
	if err != nil || string(ok.Data) != `{"sum":6}` {
		t.Fatalf("after the violations: %v %s", err, ok.Data)
	}
}

// Invalid UTF-8 inside a JSON string is refused (RFC 8259 requires UTF-8)
// rather than silently replaced with U+FFFD, as encoding/json would.
func TestInvalidUTF8InStringReliability(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, nc, []*runner.Algorithm{wordCount(t, nil)})
	msg := request(t, nc, "{\"text\":\"a \xff\xfe b\"}", nil)
	if code := msg.Header.Get(protocol.HeaderErrorCode); code != "400" || !strings.Contains(msg.Header.Get(protocol.HeaderError), "invalid UTF-8") {
		t.Fatalf("code %q: %s, want a 400 naming invalid UTF-8", code, msg.Header.Get(protocol.HeaderError))
	}
	if msg := request(t, nc, `{"text":"still here"}`, nil); string(msg.Data) != `{"words":2}` {
		t.Fatalf("after invalid UTF-8: %s", msg.Data)
	}
}

// A message over the server's max_payload, written on a raw connection
// (a client library refuses to send it): the server closes that
// connection; the runner never sees it and keeps serving.
func TestOverMaxPayloadOnTheWireReliability(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, nc, []*runner.Algorithm{wordCount(t, nil)})
	u, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // INFO
		t.Fatal(err)
	}
	size := int(nc.MaxPayload()) + 1
	fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB _INBOX.raw 1\r\nPUB run.word_count _INBOX.raw %d\r\n", size)
	_, _ = conn.Write([]byte(`{"text":"` + strings.Repeat("a", size-12) + `"}` + "\r\n"))
	var got strings.Builder
	for {
		line, err := r.ReadString('\n')
		got.WriteString(line)
		if err != nil || strings.Contains(line, "-ERR") {
			break
		}
	}
	if !strings.Contains(got.String(), "Maximum Payload") {
		t.Fatalf("server said %q, want a maximum payload violation", got.String())
	}
	if msg := request(t, nc, `{"text":"still here"}`, nil); string(msg.Data) != `{"words":2}` {
		t.Fatalf("after the oversized message: %s", msg.Data)
	}
}
