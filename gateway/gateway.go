// Package gateway is the web face of pnpworker: a JSON HTTP API over the
// same NATS machinery as every other client (run an algorithm, submit and
// read jobs, list and replay dead letters, watch events), an OpenAPI 3.1
// document generated from the live discovery records with a reference page,
// and a dashboard. It keeps no state of its own: everything it shows is
// read from discovery, the job streams, the results bucket and the
// runners' $SRV.STATS replies.
package gateway

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/replycheck"
	"github.com/pnpworker/pnpworker/rollout"
)

// Gateway serves the HTTP API, the OpenAPI document and the dashboard. It
// is safe for concurrent use; create it with New and call Run or Serve.
type Gateway struct {
	nc      *nats.Conn
	store   *jobs.Store
	cache   *discovery.Cache
	cfg     Config
	log     zerolog.Logger
	handler http.Handler
	events  *hub
	stats   *statsCache
	lat     *latencies

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	// routeTable follows the routes (GET /v1/routes, shadow runs);
	// shadower runs shadow requests (shadow.go), set by Serve unless
	// Config.Shadow.Concurrency < 0.
	js         jetstream.JetStream
	routeTable *rollout.Table
	shadower   atomic.Pointer[rollout.Shadower]
	reports    reportCache

	// checker checks runners' success replies against the answering
	// instance's output schema, as the controller does.
	checker *replycheck.ReplyChecker
	// uploads and streams bound the uploads in progress and the open
	// event streams (Config.MaxUploads, Config.MaxEventStreams).
	uploads, streams slots

	runOnce sync.Once
	// eventsDown is set when the results watch gave up.
	eventsDown atomic.Bool
}

// New returns a gateway over nc and store. It registers its metrics in
// cfg.Metrics and fails when they are registered there already (one
// gateway per registry).
func New(nc *nats.Conn, store *jobs.Store, cfg Config) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	cfg.setDefaults()
	g := &Gateway{
		nc:    nc,
		store: store,
		cache: store.Registry().NewCache(cfg.Logger.With().Str("component", "gateway_discovery").Logger()),
		cfg:   cfg,
		log:   cfg.Logger,
		lat:   newLatencies(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pnp_gateway_http_requests_total",
			Help: "HTTP requests the gateway answered, by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pnp_gateway_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern (long-polls and event streams included).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
	}
	g.checker = replycheck.NewReplyChecker(cfg.Logger.With().Str("component", "gateway_replies").Logger(), 0, 0)
	g.uploads, g.streams = make(slots, cfg.MaxUploads), make(slots, cfg.MaxEventStreams)
	// The store's context: one that reaches JetStream in another domain
	// (a gateway on a leaf node) does so for everything the gateway reads.
	js := store.JetStream()
	g.js = js
	collectors := []prometheus.Collector{g.requests, g.duration}
	g.routeTable = rollout.NewTable(js, rollout.Config{}, cfg.Logger.With().Str("component", "gateway_routes").Logger())
	if cfg.Shadow.Concurrency >= 0 {
		collectors = append(collectors, g.shadowMetrics()...)
	}
	for _, c := range collectors {
		if err := cfg.Metrics.Register(c); err != nil {
			return nil, fmt.Errorf("gateway: register metrics: %w", err)
		}
	}
	g.stats = newStatsCache(nc, cfg.StatsTimeout, cfg.StatsTTL)
	g.events = newHub(g)
	g.handler = g.routes()
	return g, nil
}

// Handler returns the gateway's HTTP handler: every route, behind the
// token check, CORS and the metrics. It answers only while Run or Serve
// runs (the discovery view and the event feed live there).
func (g *Gateway) Handler() http.Handler { return g.handler }

// Ready is closed once the gateway's discovery view has loaded.
func (g *Gateway) Ready() <-chan struct{} { return g.cache.Ready() }

// Run listens on cfg.Addr and serves until ctx ends, then shuts the HTTP
// server down (giving requests a few seconds) and returns.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listen %s: %w", g.cfg.Addr, err)
	}
	return g.Serve(ctx, ln)
}

// shutdownGrace is how long a stopping gateway lets requests finish.
const shutdownGrace = 5 * time.Second

// Serve serves on ln until ctx ends; it closes ln. It may be called once.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	first := false
	g.runOnce.Do(func() { first = true })
	if !first {
		ln.Close()
		return errors.New("gateway: Serve called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = g.cache.Run(ctx) }()
	go func() { defer wg.Done(); g.events.run(ctx) }()
	go func() { defer wg.Done(); _ = g.routeTable.Run(ctx) }()
	var sh *rollout.Shadower
	if g.cfg.Shadow.Concurrency >= 0 {
		opts := g.cfg.Shadow
		opts.Logger = g.log
		sh = rollout.NewShadower(ctx, g.nc, g.js, opts)
		g.shadower.Store(sh)
	}
	defer func() {
		cancel()
		wg.Wait()
		if sh != nil {
			sh.Wait()
		}
	}()

	srv := &http.Server{
		Handler:           g.handler,
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		ReadTimeout:       g.cfg.ReadTimeout,
		WriteTimeout:      g.cfg.WriteTimeout,
		IdleTimeout:       g.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          stdlog.New(g.log.With().Str("component", "http").Logger(), "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	g.log.Info().Str("addr", ln.Addr().String()).Bool("token", g.cfg.Token != "").Msg("gateway listening")
	select {
	case err := <-errc:
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// route registers h under pattern, instrumented with the pattern as the
// route label; open routes skip the token check.
type routeOpts struct{ open bool }

func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h http.HandlerFunc, o routeOpts) {
		var hh http.Handler = h
		if !o.open {
			hh = g.authorize(hh)
		}
		mux.Handle(pattern, g.instrument(pattern, hh))
	}
	api := routeOpts{}
	open := routeOpts{open: true}
	handle("GET /v1/algorithms", g.listAlgorithms, api)
	handle("POST /v1/algorithms/{name}/run", g.run, api)
	handle("POST /v1/algorithms/{name}/jobs", g.submit, api)
	handle("GET /v1/jobs", g.listJobs, api)
	handle("GET /v1/jobs/{id}", g.job, api)
	handle("GET /v1/jobs/{id}/output", g.jobOutput, api)
	handle("DELETE /v1/jobs/{id}", g.cancel, api)
	handle("POST /v1/objects", g.upload, api)
	handle("GET /v1/objects/{bucket}/{name...}", g.download, api)
	handle("GET /v1/dead", g.dead, api)
	handle("POST /v1/dead/{id}/replay", g.replay, api)
	handle("GET /v1/queues", g.queues, api)
	handle("GET /v1/schedules", g.listSchedules, api)
	handle("POST /v1/schedules", g.addSchedule, api)
	handle("DELETE /v1/schedules/{name}", g.removeSchedule, api)
	handle("GET /v1/events", g.eventStream, api)
	handle("GET /v1/routes", g.listRoutes, api)
	handle("GET /v1/algorithms/{name}/comparisons", g.comparisons, api)
	handle("GET /openapi.json", g.openAPI, api)
	handle("GET /metrics", promhttp.HandlerFor(g.cfg.Metrics, promhttp.HandlerOpts{}).ServeHTTP, api)
	handle("GET /healthz", g.healthz, open)
	handle("GET /readyz", g.readyz, open)
	handle("GET /docs", g.static("docs.html"), open)
	handle("GET /{$}", g.static("index.html"), open)
	handle("GET /web/{file}", g.asset, open)
	handle("/", g.fallback(mux), open)
	var h http.Handler = mux
	if g.cfg.CORSOrigin != "" {
		h = g.cors(h)
	}
	return g.guard(h)
}

// authorize refuses a request without the configured bearer token, in the
// Authorization header or the pnp_token cookie (which EventSource and
// plain links send by themselves; the dashboard sets it SameSite=Strict).
func (g *Gateway) authorize(next http.Handler) http.Handler {
	if g.cfg.Token == "" {
		return next
	}
	want := []byte(g.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := ""
		if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			got = strings.TrimSpace(a[7:])
		} else if c, err := r.Cookie("pnp_token"); err == nil {
			got = c.Value
		}
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pnp"`)
			writeProblem(w, problem{Code: http.StatusUnauthorized, Message: "missing or wrong bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cors lets the one configured origin call the API.
func (g *Gateway) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") == g.cfg.CORSOrigin {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", g.cfg.CORSOrigin)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", "Location, Pnp-Instance, Pnp-Algorithm, Pnp-Version, Pnp-Job-Id, Pnp-Not-Started, Pnp-Input-Ref")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key, Pnp-Timeout, Pnp-Not-Before, Pnp-Priority, traceparent")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// statusWriter records the status code for the metrics. Unwrap lets
// http.ResponseController reach the connection (deadlines, flushing).
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument counts and times every request under its route pattern, and
// turns a panic into a 500 problem.
func (g *Gateway) instrument(route string, next http.Handler) http.Handler {
	dur := g.duration.WithLabelValues(route)
	// The success's counter, resolved once: a label lookup hashes the
	// label values on every request.
	ok := g.requests.WithLabelValues(route, strconv.Itoa(http.StatusOK))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				g.log.Error().Interface("panic", p).Str("route", route).Msg("handler panicked")
				if sw.code == 0 {
					writeProblem(sw, problem{Code: http.StatusInternalServerError, Message: "internal error"})
				}
			}
			if code := sw.code; code == 0 || code == http.StatusOK {
				ok.Inc()
			} else {
				g.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
			}
			dur.Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(sw, r)
	})
}

// extendWrite moves the connection's write deadline to d from now, for
// routes that wait longer than the server's write timeout on purpose.
func extendWrite(w http.ResponseWriter, d time.Duration) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
}
