package controller_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
)

// startAccountServer runs an embedded server from a config like nats.conf:
// one account APP with its own JetStream storage limit (maxFile bytes),
// optionally requiring max_bytes on every stream, and one user app/app.
func startAccountServer(t *testing.T, maxFile int64, maxBytesRequired bool) *nats.Conn {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`
jetstream { store_dir: %q, max_file_store: 1GB, max_memory_store: 64MB }
accounts {
  APP {
    jetstream: { max_file: %d, max_mem: 8MB, max_bytes_required: %v }
    users: [ { user: app, password: app } ]
  }
}
`, filepath.Join(dir, "js"), maxFile, maxBytesRequired)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func resultsStream(t *testing.T, ctx context.Context, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	st, err := js.Stream(ctx, "KV_"+controller.ResultsBucket)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// syncBuffer collects log output written from other goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFullStreamsNeverStopHeartbeats floods a subject nobody consumes until
// JOBS is full and overfills results and DEAD, inside an account whose
// JetStream storage is only a little larger than the streams' limits
// together. Rule: a full JOBS refuses the producer with ErrJobsFull and
// drops no stored job; DEAD and results drop their oldest records instead
// of refusing; and none of it makes a discovery heartbeat fail: the
// runner's key keeps being renewed. Without stream limits, the flood fills the account and
// every write fails, heartbeats included.
func TestFullStreamsNeverStopHeartbeats(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name             string
		maxBytesRequired bool
		jobsMaxBytes     int64
		jobsMaxMsgs      int64
		body             int // bytes of padding per job
	}{
		{"jobs full by bytes", false, 4 * mib, 0, 32 << 10},
		{"jobs full by bytes, account requires max_bytes", true, 4 * mib, 0, 32 << 10},
		{"jobs full by count", true, 4 * mib, 200, 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// 4 + 1 + 1 + 1 + ½ MiB of streams and 1 + 1 + ½ MiB of
			// object stores in an 11 MiB account.
			nc := startAccountServer(t, 11*mib, tc.maxBytesRequired)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg := controller.StoreConfig{
				JobsMaxBytes: tc.jobsMaxBytes, JobsMaxMsgs: tc.jobsMaxMsgs,
				DeadMaxBytes: mib, ResultsMaxBytes: mib,
				Discovery:         discovery.Config{TTL: 3 * time.Second, MaxBytes: mib},
				Inputs:            controller.ObjectsConfig{MaxBytes: mib},
				Outputs:           controller.ObjectsConfig{MaxBytes: mib},
				Uploads:           controller.ObjectsConfig{MaxBytes: mib / 2},
				SchedulesMaxBytes: mib / 2,
			}
			cfg.JobsMaxPerAlgorithm = -1 // one algorithm floods: let it fill JOBS
			store, err := controller.Provision(ctx, js, cfg)
			if err != nil {
				t.Fatalf("provision: %v", err)
			}

			// A runner's registration, renewed every second.
			reg := store.Registry()
			rec := discovery.Registration{
				Algorithm: "echo", Version: "1.0.0", Instance: "i1", Subject: "run.echo", QueueGroup: "runners",
				InputSchema: json.RawMessage(`{"type":"object"}`), OutputSchema: json.RawMessage(`{"type":"object"}`),
				TimeoutMS: 1000, MaxConcurrency: 1, StartedAt: time.Now().UTC(),
			}
			if err := reg.Register(ctx, rec); err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			kctx, kcancel := context.WithCancel(ctx)
			kdone := make(chan struct{})
			go func() {
				defer close(kdone)
				reg.Keepalive(kctx, rec, zerolog.New(&logs))
			}()
			defer func() { kcancel(); <-kdone }()

			// Flood a subject nobody consumes until JOBS refuses.
			body := []byte(`{"pad":"` + strings.Repeat("x", tc.body) + `"}`)
			bound := int(tc.jobsMaxBytes)/tc.body + 1000
			stored := 0
			var full error
			for i := 0; i < bound && full == nil; i++ {
				if _, err := store.Submit(ctx, "nobody", body, controller.SubmitOptions{}); err != nil {
					full = err
					break
				}
				stored++
			}
			if full == nil {
				t.Fatalf("JOBS took %d jobs of %d bytes and never refused one", stored, len(body))
			}
			if !errors.Is(full, controller.ErrJobsFull) || !strings.Contains(full.Error(), "JOBS") {
				t.Fatalf("the producer's error does not say JOBS is full: %v", full)
			}
			t.Logf("JOBS refused job %d: %v", stored+1, full)
			info, err := store.Jobs().Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State.FirstSeq != 1 || info.State.Msgs != uint64(stored) {
				t.Fatalf("JOBS dropped stored jobs: first seq %d, %d messages, %d accepted", info.State.FirstSeq, info.State.Msgs, stored)
			}

			// Overfill DEAD and results: both drop their oldest and never
			// refuse (a refused outcome would send its job round again).
			letter := bytes.Repeat([]byte("d"), 16<<10)
			for i := 0; i < 2*mib/len(letter); i++ {
				if _, err := js.Publish(ctx, controller.DeadSubjectPrefix+"nobody", letter); err != nil {
					t.Fatalf("dead letter %d refused: %v", i, err)
				}
				if _, err := store.Results().Put(ctx, fmt.Sprintf("r%d", i), letter); err != nil {
					t.Fatalf("result %d refused: %v", i, err)
				}
			}
			for _, st := range []jetstream.Stream{store.Dead(), resultsStream(t, ctx, js)} {
				info, err := st.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if info.State.FirstSeq == 1 || info.State.Bytes > mib {
					t.Fatalf("%s did not make room: %+v", info.Config.Name, info.State)
				}
			}
			if _, err := store.Results().Get(ctx, "r0"); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Fatalf("the oldest result is still there (%v) although the bucket overflowed", err)
			}

			// Heartbeats keep renewing the key.
			e, err := reg.KeyValue().Get(ctx, rec.Key())
			if err != nil {
				t.Fatalf("discovery key gone after the flood: %v", err)
			}
			start := e.Revision()
			deadline := time.Now().Add(15 * time.Second)
			for {
				e, err := reg.KeyValue().Get(ctx, rec.Key())
				if err != nil {
					t.Fatalf("discovery key gone: %v", err)
				}
				if e.Revision() >= start+2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the key was not renewed twice in 15 s after the flood (revision %d, then %d); log:\n%s", start, e.Revision(), logs.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if strings.Contains(logs.String(), "heartbeat failed") {
				t.Fatalf("a heartbeat failed:\n%s", logs.String())
			}
		})
	}
}
