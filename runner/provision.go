package runner

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/rollout"
)

// provisioning is the runner's start-up work on JetStream that serving
// does not wait for: the discovery bucket (made, or opened with
// WithoutProvisioning), the routes bucket and the algorithms' outputs
// buckets. It runs while the runner reads its routes and subscribes;
// registering waits for it.
type provisioning struct {
	// routesBucket is closed once the routes bucket exists as far as this
	// runner can tell: provisioned, failed to provision, or not this
	// runner's to make (WithoutProvisioning).
	routesBucket chan struct{}
	// done is closed when everything is provisioned or one step failed;
	// reg and err are set then.
	done   chan struct{}
	reg    *discovery.Registry
	err    error
	cancel context.CancelFunc
}

func newProvisioning() *provisioning {
	return &provisioning{routesBucket: make(chan struct{}), done: make(chan struct{})}
}

// startProvisioning starts p on its own goroutines, the independent steps
// at once (each is one or two JetStream API round trips).
func (r *Runner) startProvisioning(ctx context.Context, js jetstream.JetStream, p *provisioning) {
	ctx, p.cancel = context.WithCancel(ctx)
	if !r.opts.provision {
		close(p.routesBucket)
		go func() {
			defer close(p.done)
			p.reg, p.err = discovery.Open(ctx, js, r.opts.discovery)
		}()
		return
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	wg.Go(func() {
		reg, err := discovery.Provision(ctx, js, r.opts.discovery)
		if err != nil {
			fail(err)
			return
		}
		mu.Lock()
		p.reg = reg
		mu.Unlock()
	})
	wg.Go(func() {
		defer close(p.routesBucket)
		if _, err := rollout.Provision(ctx, js, r.opts.routes); err != nil {
			fail(err)
		}
	})
	// Each algorithm's own outputs bucket, unless pnp provision made it
	// already (its settings are then kept).
	for _, a := range r.algs {
		wg.Go(func() {
			if err := objref.EnsureBucket(ctx, js, objref.OutputsConfig(a.Name(), 0, 0, r.opts.discovery.Replicas)); err != nil {
				fail(err)
			}
		})
	}
	go func() {
		defer close(p.done)
		wg.Wait()
		if len(errs) > 0 {
			p.reg, p.err = nil, errors.Join(errs...)
		}
	}()
}

// wait stops provisioning that is still under way and waits for it to end.
func (p *provisioning) wait() {
	p.cancel()
	<-p.done
}
