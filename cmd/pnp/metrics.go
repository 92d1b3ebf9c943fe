package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// metricsFlag is --metrics: where the process serves Prometheus metrics.
type metricsFlag struct{ addr string }

func (m *metricsFlag) register(fs *flagSet) {
	fs.StringVar(&m.addr, "metrics", env("PNP_METRICS", ""), "address to serve Prometheus metrics on, at /metrics (e.g. :9464); pnp runner also answers /readyz there; empty: none (env PNP_METRICS)")
}

// newRegistry is the process's one registry: every part (runner,
// controller, gateway) registers its metrics here, next to the Go runtime
// and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves reg at /metrics on addr until ctx ends. The listener
// is opened before it returns, so a bad or busy address is an error at
// start-up rather than a log line later.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log zerolog.Logger) (stop func(), err error) {
	return serveMetricsReady(ctx, addr, reg, nil, log)
}

// serveMetricsReady is serveMetrics with, when ready is not nil, GET
// /readyz on the same address: 200 while ready returns nil, else 503 with
// its error. Kubernetes asks it whether a runner serves yet (a runner has
// no other port).
func serveMetricsReady(ctx context.Context, addr string, reg *prometheus.Registry, ready func() error, log zerolog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: --metrics %q: %v", errUsage, addr, err)
	}
	mux := http.NewServeMux()
	if ready != nil {
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if err := ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, err)
				return
			}
			fmt.Fprintln(w, "ok")
		})
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg, // promhttp_metric_handler_* about the scrapes themselves
		Timeout:       10 * time.Second,
		ErrorHandling: promhttp.ContinueOnError,
	}))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       time.Minute,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics server stopped")
		}
	}()
	log.Info().Str("addr", ln.Addr().String()).Msg("serving metrics on /metrics")
	stopCtx, cancel := context.WithCancel(ctx)
	go func() {
		<-stopCtx.Done()
		shut, cancelShut := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancelShut()
		_ = srv.Shutdown(shut)
	}()
	return func() { cancel(); <-done }, nil
}
