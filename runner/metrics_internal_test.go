package runner

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkObserve is what metrics add to each request on the runner's
// path: everything else is read at scrape time from counters the runner
// keeps anyway. Compare with the CPU per request of `pnp bench`.
func BenchmarkObserve(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		e := &endpoint{alg: &Algorithm{spec: Spec{Name: "bench"}}}
		if on {
			name = "on"
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			e.metrics, e.okObs = m, m.duration.WithLabelValues("bench", "200")
		}
		b.Run(name, func(b *testing.B) {
			received := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					e.observe(received, 0)
				}
			})
		})
	}
}
