package deploy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/objref"
)

// outputAlgorithms are the algorithms whose outputs_<algorithm> bucket
// compose.yaml's provisioning creates (PNP_OUTPUT_ALGORITHMS): every
// algorithm one of its runners serves. The deployments of these tests are
// provisioned the same way.
var outputAlgorithms = []string{"meme_classifier", "image_info", "image_thumbnail", "language_detection", "iris_species", "text_stats"}

// checkOutputsBucket checks that algorithm alg, served by compose service
// service under user, has its outputs bucket provisioned, that user may
// write it, and the controller, the producer and the gateway may read it.
func checkOutputsBucket(t *testing.T, users map[string]*server.User, service, user, alg string, provisioned []string) {
	t.Helper()
	b := objref.OutputsBucketFor(alg)
	if !slices.Contains(provisioned, alg) {
		t.Errorf("service %s serves %s, whose bucket %s compose's provisioning does not create (PNP_OUTPUT_ALGORITHMS)", service, alg, b)
	}
	for _, subj := range []string{"$O." + b + ".>", "$JS.API.STREAM.INFO.OBJ_" + b, "$JS.API.DIRECT.GET.OBJ_" + b + ".>"} {
		if !slices.Contains(users[user].Permissions.Publish.Allow, asPublished(user, subj)) {
			t.Errorf("service %s serves %s, but user %s may not publish %s to store its outputs", service, alg, user, asPublished(user, subj))
		}
	}
	for _, reader := range []string{"controller", "producer", "gateway"} {
		for _, subj := range []string{"$JS.API.STREAM.INFO.OBJ_" + b, "$JS.API.DIRECT.GET.OBJ_" + b, "$JS.API.DIRECT.GET.OBJ_" + b + ".>"} {
			if !slices.Contains(users[reader].Permissions.Publish.Allow, subj) {
				t.Errorf("%s may not publish %s: it cannot read the outputs of %s", reader, subj, alg)
			}
		}
	}
}

// bucketWriters are the object store buckets of nats.conf and the roles
// that write each: one role per bucket, so that a roll-up or a purge by a
// role can only ever empty what that role wrote.
func bucketWriters() map[string][]string {
	w := map[string][]string{
		objref.InputsBucket:  {"producer"},
		objref.UploadsBucket: {"gateway"},
		objref.OutputsBucket: {"controller"},
	}
	runnerOf := map[string]string{
		"meme_classifier": "meme_runner", "image_info": "meme_runner", "image_thumbnail": "meme_runner",
		"language_detection": "text_runner", "iris_species": "py_runner", "text_stats": "py_runner",
	}
	for _, alg := range outputAlgorithms {
		w[objref.OutputsBucketFor(alg)] = []string{runnerOf[alg]}
	}
	return w
}

// attempt runs call, which publishes to subject and waits for the
// server's answer, and reports whether the server took it: false once the
// server reported the permission violation for subject (call is then
// cancelled). An answer that is an error without a violation fails the
// test.
func (c *client) attempt(t *testing.T, subject string, call func(ctx context.Context) error) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- call(ctx) }()
	quoted := `"` + subject + `"`
	denied := func() bool {
		for _, v := range c.violations() {
			if strings.Contains(v, quoted) {
				return true
			}
		}
		return false
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err == nil {
				return true
			}
			c.expectViolation(t, quoted)
			return false
		case <-tick.C:
			if denied() {
				cancel()
				<-done
				return false
			}
		}
	}
}

// TestObjectRollupsStayInTheirBucket proves, under nats.conf, that no
// role can empty or delete what another role stored in the object stores.
// Permissions cannot refuse a "Nats-Rollup: all" header (they match
// subjects), and object stores need roll-ups, so any writer of a bucket
// can empty it: each bucket therefore has one writer. Every role that
// writes a bucket stores an object there; then every role in turn, on
// every bucket it does not write alone, publishes a message with
// "Nats-Rollup: all", sends a purge request, and deletes each other role's
// object (a deleted-object meta message with "Nats-Rollup: sub", what
// ObjectStore.Delete publishes). Each must be refused, and every object
// another role stored must still read back whole. Last, each role rolls up
// a bucket it owns: that empties its own bucket and nothing else.
func TestObjectRollupsStayInTheirBucket(t *testing.T) {
	url := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := connect(t, url, "admin")
	if _, err := controller.Provision(ctx, admin.js(t), controller.StoreConfig{OutputAlgorithms: outputAlgorithms}); err != nil {
		t.Fatalf("admin provisions: %v", err)
	}
	writers := bucketWriters()
	buckets := make([]string, 0, len(writers))
	for b := range writers {
		buckets = append(buckets, b)
	}
	slices.Sort(buckets)
	conns := map[string]*client{}
	for _, r := range roles {
		conns[r] = connect(t, url, r)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 20_000) // 320 kB: 3 chunks and a meta message

	type seed struct{ bucket, writer, name string }
	// store has every writer of every bucket store an object, named for
	// round, and returns them.
	store := func(t *testing.T, round string) []seed {
		t.Helper()
		var seeds []seed
		for _, b := range buckets {
			for _, w := range writers[b] {
				s := seed{b, w, "seed/" + w + "/" + round}
				if _, err := objref.Put(ctx, conns[w].js(t), b, s.name, bytes.NewReader(data)); err != nil {
					t.Fatalf("%s stores an object in %s: %v", w, b, err)
				}
				seeds = append(seeds, s)
			}
		}
		return seeds
	}
	msgs := func(t *testing.T, bucket string) uint64 {
		t.Helper()
		st, err := admin.js(t).Stream(ctx, "OBJ_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	// intact fails for every object of seeds but those attacker mayLose
	// that no longer reads back whole, stating how many messages of its
	// bucket survived.
	intact := func(t *testing.T, attacker string, seeds []seed, before map[string]uint64, mayLose func(seed) bool) {
		t.Helper()
		for _, s := range seeds {
			if mayLose(s) {
				continue
			}
			got, err := objref.Read(ctx, admin.js(t), objref.Ref{Bucket: s.bucket, Name: s.name}, 0)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s's object %s in %s is gone or damaged after %s's attacks (%d bytes, %v): %d of %d messages of the bucket survive",
					s.writer, s.name, s.bucket, attacker, len(got), err, msgs(t, s.bucket), before[s.bucket])
			}
		}
	}
	rollup := func(c *client, subject, kind string, body []byte) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			m := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
			m.Header.Set("Nats-Rollup", kind)
			_, err := c.js(t).PublishMsg(ctx, m)
			return err
		}
	}

	for i, attacker := range []string{"meme_runner", "text_runner", "py_runner", "controller", "producer", "gateway"} {
		t.Run(attacker+" cannot touch what others stored", func(t *testing.T) {
			seeds := store(t, fmt.Sprint(i))
			before := map[string]uint64{}
			for _, b := range buckets {
				before[b] = msgs(t, b)
			}
			// A fresh connection: its violations are this attacker's only.
			c := connect(t, url, attacker)
			for _, b := range buckets {
				if slices.Equal(writers[b], []string{attacker}) {
					continue // its own bucket
				}
				subj := "$O." + b + ".M.rollup_" + attacker
				if c.attempt(t, subj, rollup(c, subj, "all", []byte("{}"))) {
					t.Errorf("%s's roll-up of %s was accepted: %d of %d messages survive", attacker, b, msgs(t, b), before[b])
				}
				// A runner team's user reaches APP's JetStream under its
				// account's prefix.
				purge := asPublished(attacker, "$JS.API.STREAM.PURGE.OBJ_"+b)
				if c.attempt(t, purge, func(ctx context.Context) error {
					resp, err := c.RequestWithContext(ctx, purge, nil)
					if err != nil {
						return err
					}
					var r struct{ Success bool }
					if json.Unmarshal(resp.Data, &r) != nil || !r.Success {
						return fmt.Errorf("purge answered %s", resp.Data)
					}
					return nil
				}) {
					t.Errorf("%s's purge of %s was accepted: %d of %d messages survive", attacker, b, msgs(t, b), before[b])
				}
				for _, s := range seeds {
					if s.bucket != b || s.writer == attacker {
						continue
					}
					meta := "$O." + b + ".M." + base64.URLEncoding.EncodeToString([]byte(s.name))
					deleted, _ := json.Marshal(map[string]any{"name": s.name, "bucket": b, "deleted": true})
					if c.attempt(t, meta, rollup(c, meta, "sub", deleted)) {
						t.Errorf("%s deleted %s's object %s in %s", attacker, s.writer, s.name, b)
					}
				}
			}
			intact(t, attacker, seeds, before, func(s seed) bool { return s.writer == attacker })
		})
	}

	t.Run("a role's roll-up empties its own bucket only", func(t *testing.T) {
		for i, b := range buckets {
			owner := writers[b][0]
			seeds := store(t, fmt.Sprint("own", i))
			before := map[string]uint64{}
			for _, b := range buckets {
				before[b] = msgs(t, b)
			}
			c := conns[owner]
			subj := "$O." + b + ".M.rollup"
			if !c.attempt(t, subj, rollup(c, subj, "all", []byte("{}"))) {
				t.Fatalf("%s may not roll up its own bucket %s", owner, b)
			}
			if n := msgs(t, b); n != 1 {
				t.Errorf("%s rolled up %s: %d messages left, want 1 (the roll-up)", owner, b, n)
			}
			intact(t, owner, seeds, before, func(s seed) bool { return s.bucket == b })
		}
	})

	for _, c := range conns {
		c.expectClean(t)
	}
}
