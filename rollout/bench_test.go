package rollout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/rollout"
)

// BenchmarkReadLastHistory reads the last 1000 of 50 000 history records
// of an algorithm (half of a stream of 100 000) the way pnp replay --last
// does, against reading every record of the algorithm (what it did
// before, and what a read with no limit still does), in the same run:
//
//	go test ./rollout/ -run '^$' -bench ReadLastHistory -benchtime 10x
func BenchmarkReadLastHistory(b *testing.B) {
	s := natstest.Start(b)
	js, _ := jetstream.New(s.Connect())
	ctx := context.Background()
	if _, err := rollout.ProvisionHistory(ctx, js, rollout.HistoryConfig{}); err != nil {
		b.Fatal(err)
	}
	in := json.RawMessage(`{"text":"` + fmt.Sprintf("%0500d", 1) + `"}`)
	for i := range 100000 {
		alg := []string{"a", "b"}[i%2]
		rec, _ := json.Marshal(rollout.HistoryRecord{Algorithm: alg, JobID: fmt.Sprint(i), Version: "1", Input: in, Output: in, At: time.Now()})
		if _, err := js.PublishAsync(rollout.HistorySubjectPrefix+alg, rec); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	read := func(b *testing.B, limit, want int) time.Duration {
		start := time.Now()
		h, err := rollout.ReadHistory(ctx, js, "a", time.Time{}, limit)
		if err != nil || len(h) != want {
			b.Fatalf("read: %d records, %v; want %d", len(h), err, want)
		}
		return time.Since(start)
	}
	var last, all []time.Duration
	b.ResetTimer()
	for range b.N {
		last = append(last, read(b, 1000, 1000))
		all = append(all, read(b, 0, 50000))
	}
	b.StopTimer()
	ml, ma := median(last), median(all)
	b.ReportMetric(float64(ml.Microseconds())/1000, "ms/last-1000")
	b.ReportMetric(float64(ma.Microseconds())/1000, "ms/all-50000")
	b.ReportMetric(float64(ma)/float64(ml), "speedup")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
