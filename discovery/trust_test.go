package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
)

// A record may carry two subjects only, run.<algorithm> and the pinned
// subject of its own version: a subject in the
// jobs namespace made the controller feed its own stream, one under
// $KV.results let a runner credential write any job's result, and one of
// another algorithm steals its requests. Writers refuse such records and
// every reader (List, Lookup, LookupDirect, Cache) ignores them when they
// are put into the bucket directly; List reports each as invalid.
func TestSubjectMustBeRunAlgorithm(t *testing.T) {
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	c := runCache(t, reg)
	ctx := context.Background()
	kv := reg.KeyValue()
	forged := []string{
		"jobs.ocr",
		"$KV.results.victim",
		"dead.ocr",
		"run.other",
		"run.ocr.v1",       // not the pinned form of the record's version 1.0.0
		"run.ocr.v2_0_0",   // another version's pinned subject: steals its pinned calls
		"run.ocr.v1_0_0.x", // more tokens
		"run.other.v1_0_0", // another algorithm's pinned subject
		"run.ocr.v1.0.0",   // version not encoded as one token
		"run.ocr.v*",
		"run.ocr.>",
		"run.*",
		"run",
		"notify.x",
		"RUN.ocr",
	}
	for i, subject := range forged {
		t.Run(subject, func(t *testing.T) {
			r := record("ocr", fmt.Sprintf("forged%d", i))
			r.Subject = subject
			if err := reg.Register(ctx, r); !errors.Is(err, discovery.ErrInvalidRecord) {
				t.Fatalf("register with subject %q: %v, want ErrInvalidRecord", subject, err)
			}
			r.HeartbeatAt = time.Now().UTC()
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, r.Key(), b); err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := reg.Register(ctx, record("ocr", "good")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c.Lookup("ocr")) > 0 }, "cache never saw the good record")
	if got := keysOf(c.Lookup("ocr")); len(got) != 1 || got[0] != "ocr.good" {
		t.Fatalf("cache lists %v, want only ocr.good", got)
	}
	l, err := reg.Lookup(ctx, "ocr")
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(l); len(got) != 1 || got[0] != "ocr.good" {
		t.Fatalf("lookup lists %v, want only ocr.good", got)
	}
	if l, err = reg.LookupDirect(ctx, "ocr", nil); err != nil {
		t.Fatal(err)
	}
	if got := keysOf(l); len(got) != 1 || got[0] != "ocr.good" {
		t.Fatalf("direct lookup lists %v, want only ocr.good", got)
	}
	// List skips every forged record and reports it as invalid.
	skipped := map[string]error{}
	l, err = reg.List(ctx, func(key string, err error) { skipped[key] = err })
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(l); len(got) != 1 || got[0] != "ocr.good" {
		t.Fatalf("list lists %v, want only ocr.good", got)
	}
	if len(skipped) != len(forged) {
		t.Errorf("list reported %d skipped records, want the %d forged ones: %v", len(skipped), len(forged), skipped)
	}
	for i := range forged {
		key := record("ocr", fmt.Sprintf("forged%d", i)).Key()
		if err, ok := skipped[key]; !ok || !errors.Is(err, discovery.ErrInvalidRecord) {
			t.Errorf("list skipped %s (subject %q) with %v, want ErrInvalidRecord", key, forged[i], err)
		}
	}
}

// A record is bounded in size and in what compiling its schemas costs, on
// write and on read: a 470 KB schema of 8000 patterns took seconds and
// tens of megabytes to compile in every reader that compiles it.
func TestRecordSizeAndSchemaCostAreBounded(t *testing.T) {
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	c := runCache(t, reg)
	ctx := context.Background()
	props := func(n int, pattern string) json.RawMessage {
		var b strings.Builder
		b.WriteString(`{"type":"object","properties":{`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"p%d":{"type":"string","pattern":%q}`, i, pattern)
		}
		b.WriteString(`}}`)
		return json.RawMessage(b.String())
	}
	cases := map[string]func(*discovery.Registration){
		"8000 patterns, 470 KB": func(r *discovery.Registration) {
			r.InputSchema = props(8000, `^[a-z0-9]{1,40}(-[a-z0-9]{1,40})*$`)
		},
		"a description past the size limit": func(r *discovery.Registration) {
			r.Description = strings.Repeat("x", discovery.MaxRecordSize)
		},
		"too many small patterns": func(r *discovery.Registration) {
			r.OutputSchema = props(discovery.MaxSchemaPatterns+1, `^a$`)
		},
		"few patterns, costly to compile": func(r *discovery.Registration) {
			r.InputSchema = props(40, `^[\pL\pN]{1,30}$`)
		},
		"patternProperties count too": func(r *discovery.Registration) {
			var b strings.Builder
			b.WriteString(`{"type":"object","patternProperties":{`)
			for i := range discovery.MaxSchemaPatterns + 1 {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `"^k%d$":{}`, i)
			}
			b.WriteString(`}}`)
			r.InputSchema = json.RawMessage(b.String())
		},
		"17 nested anyOf pairs, 1 KB": func(r *discovery.Registration) {
			r.InputSchema = anyOfChain(17)
		},
		"an output schema of 12 nested anyOf pairs": func(r *discovery.Registration) {
			r.OutputSchema = anyOfChain(12)
		},
		"a reference cycle on the same value": func(r *discovery.Registration) {
			r.InputSchema = json.RawMessage(`{"$defs":{"a":{"anyOf":[{"type":"string"},{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"}`)
		},
	}
	kv := reg.KeyValue()
	i := 0
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			i++
			r := record("ocr", fmt.Sprintf("big%d", i))
			mutate(&r)
			if err := reg.Register(ctx, r); !errors.Is(err, discovery.ErrInvalidRecord) {
				t.Fatalf("register: %v, want ErrInvalidRecord", err)
			}
			r.HeartbeatAt = time.Now().UTC()
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, r.Key(), b); err != nil {
				t.Fatal(err)
			}
		})
	}
	// At the limits is fine.
	ok := record("ocr", "ok")
	ok.InputSchema = props(discovery.MaxSchemaPatterns, `^[a-z]+$`)
	ok.OutputSchema = anyOfChain(9) // 2046 evaluations per value
	if err := reg.Register(ctx, ok); err != nil {
		t.Fatalf("a record within the limits: %v", err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(c.Lookup("ocr")) > 0 }, "cache never saw the good record")
	if got := keysOf(c.Lookup("ocr")); len(got) != 1 || got[0] != "ocr.ok" {
		t.Fatalf("cache lists %v, want only ocr.ok", got)
	}
}

// anyOfChain is a schema of depth levels, each an anyOf of two $refs to
// the next: 2^(depth+2)-2 schemas evaluated on every value.
func anyOfChain(depth int) json.RawMessage {
	var b strings.Builder
	b.WriteString(`{"$ref":"#/$defs/d0","$defs":{`)
	for i := range depth {
		fmt.Fprintf(&b, `"d%d":{"anyOf":[{"$ref":"#/$defs/d%d"},{"$ref":"#/$defs/d%d"}]},`, i, i+1, i+1)
	}
	fmt.Fprintf(&b, `"d%d":{"type":"string"}}}`, depth)
	return json.RawMessage(b.String())
}

// The pinned subject of a record's own version is allowed, and is one
// subject token per version, usable from any client.
func TestPinnedSubjectOfOwnVersion(t *testing.T) {
	for v, want := range map[string]string{
		"1.2.0":              "run.ocr.v1_2_0",
		"2.0.0-rc.1+build.5": "run.ocr.v2_0_0-rc_1__build_5",
		"10.0.1-alpha-x":     "run.ocr.v10_0_1-alpha-x",
	} {
		if got := discovery.PinnedSubject("ocr", v); got != want {
			t.Errorf("PinnedSubject(ocr, %s) = %s, want %s", v, got, want)
		}
	}
	s := natstest.Start(t)
	reg := provision(t, s.Connect())
	r := record("ocr", "pinned")
	r.Subject = discovery.PinnedSubject("ocr", r.Version)
	if err := reg.Register(context.Background(), r); err != nil {
		t.Fatalf("register with own pinned subject: %v", err)
	}
	got, err := reg.Lookup(context.Background(), "ocr")
	if err != nil || len(got) != 1 || got[0].Subject != "run.ocr.v1_0_0" {
		t.Fatalf("lookup: %v %+v", err, got)
	}
}
