package jobs

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// benchResults is the number of records BenchmarkListJobs stores.
const benchResults = 100_000

// fillResults stores n records the way the controller does (one put per
// job on $KV.results.<id>), of four algorithms, one in a hundred failed.
func fillResults(b *testing.B, s *Store, n int) time.Time {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base := time.Now().Add(-time.Hour)
	for i := range n {
		st := StatusSucceeded
		if i%100 == 7 {
			st = StatusFailed
		}
		id := fmt.Sprintf("job-%06d", i)
		rec := recordJSON(id, fmt.Sprintf("alg_%d", i%4), st, base.Add(time.Duration(i)*time.Millisecond))
		if _, err := s.JetStream().PublishAsync("$KV."+ResultsBucket+"."+id, rec); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			select {
			case <-s.JetStream().PublishAsyncComplete():
			case <-ctx.Done():
				b.Fatal(ctx.Err())
			}
		}
	}
	select {
	case <-s.JetStream().PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal(ctx.Err())
	}
	return base
}

// BenchmarkListJobs lists the first page (50 jobs) of 100 000 stored
// results, without and with filters, and, as the baseline, the listing
// without an index or a backward scan: an ordered consumer that reads the
// whole bucket and keeps the newest 50.
//
//	go test -run '^$' -bench BenchmarkListJobs -benchtime 200x -count 3 ./jobs/
func BenchmarkListJobs(b *testing.B) {
	s := provision(b)
	base := fillResults(b, s, benchResults)
	ctx := context.Background()
	// The jobs of the last 1000 ms of submissions, the last 1000 jobs.
	since := base.Add((benchResults - 1000) * time.Millisecond)
	for _, bc := range []struct {
		name string
		opts ListOptions
	}{
		{"first_page", ListOptions{}},
		{"algorithm", ListOptions{Algorithm: "alg_2"}},
		{"status_failed", ListOptions{Status: StatusFailed}},
		{"algorithm_status", ListOptions{Algorithm: "alg_3", Status: StatusFailed}},
		{"since", ListOptions{Since: since}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var scanned int
			for b.Loop() {
				p, err := s.ListJobs(ctx, bc.opts)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Jobs) != DefaultListLimit {
					b.Fatalf("%d jobs listed", len(p.Jobs))
				}
				scanned = p.Scanned
			}
			b.ReportMetric(float64(scanned), "records/op")
		})
	}
	b.Run("baseline_read_all", func(b *testing.B) {
		for b.Loop() {
			if n := readAllNewest(b, s, DefaultListLimit); n != DefaultListLimit {
				b.Fatalf("%d jobs listed", n)
			}
		}
		b.ReportMetric(benchResults, "records/op")
	})
}

// readAllNewest reads every record of the bucket with an ordered
// consumer and keeps the newest limit: a listing without a backward scan.
func readAllNewest(b *testing.B, s *Store, limit int) int {
	ctx := context.Background()
	cons, err := s.JetStream().OrderedConsumer(ctx, "KV_"+ResultsBucket, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.JetStream().DeleteConsumer(ctx, "KV_"+ResultsBucket, cons.CachedInfo().Name) }()
	ring := make([]Result, 0, limit)
	for {
		batch, err := cons.Fetch(4096, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, _ := m.Metadata()
			r, ok := listRecord(storedMsg{seq: md.Sequence.Stream, subject: m.Subject(), data: m.Data()})
			if ok {
				if len(ring) == limit {
					ring = ring[1:]
				}
				ring = append(ring, r)
			}
			if md.NumPending == 0 {
				return len(ring)
			}
		}
		if n == 0 {
			return len(ring)
		}
	}
}
