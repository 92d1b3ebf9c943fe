package controller_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
)

// TestConcurrentProvisionReliability: processes that start together (a
// controller, pnp submit, pnp up's parts) all provision the same streams
// and buckets at once, each on its own connection; every one of them
// succeeds, also for the results bucket, which Provision switches to
// discard old right after creating it.
func TestConcurrentProvisionReliability(t *testing.T) {
	for round := range 5 {
		srv := natstest.Start(t)
		const n = 6
		var wg sync.WaitGroup
		errs := make([]error, n)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for i := range n {
			nc := srv.Connect()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = controller.Provision(ctx, js, controller.StoreConfig{})
			}()
		}
		wg.Wait()
		cancel()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: provision %d of %d at once: %v", round, i+1, n, err)
			}
		}
	}
}
