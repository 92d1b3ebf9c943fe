package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/gateway"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/rollout"
)

// httpFlags configure the gateway's HTTP side, for `pnp gateway` and
// `pnp up`.
type httpFlags struct {
	addr      string
	token     string
	cors      string
	maxUpload string
	// maxStreams, maxUploads and uploadMinRate bound the event streams
	// and uploads (gateway.Config).
	maxStreams    int
	maxUploads    int
	uploadMinRate string
}

func (h *httpFlags) register(fs *flagSet) {
	fs.StringVar(&h.addr, "http", env("PNP_HTTP", gateway.DefaultAddr), "address of the HTTP API and dashboard; '' turns them off; any address but loopback needs --http-token (env PNP_HTTP)")
	fs.StringVar(&h.token, "http-token", env("PNP_HTTP_TOKEN", ""), "bearer token every API request must carry (env PNP_HTTP_TOKEN)")
	fs.StringVar(&h.cors, "http-cors", env("PNP_HTTP_CORS", ""), "the one origin browsers may call the API from, e.g. https://app.example (env PNP_HTTP_CORS; default: no CORS)")
	fs.IntVar(&h.maxStreams, "http-max-event-streams", envInt("PNP_HTTP_MAX_EVENT_STREAMS", gateway.DefaultMaxEventStreams), "most GET /v1/events streams open at once; past it a new one gets 503 (env PNP_HTTP_MAX_EVENT_STREAMS)")
	fs.IntVar(&h.maxUploads, "http-max-uploads", envInt("PNP_HTTP_MAX_UPLOADS", gateway.DefaultMaxUploads), "most uploads (POST /v1/objects, multipart runs and jobs) in progress at once; past it a new one gets 503 (env PNP_HTTP_MAX_UPLOADS)")
	fs.StringVar(&h.uploadMinRate, "http-upload-min-rate", env("PNP_HTTP_UPLOAD_MIN_RATE", "16KiB"), "slowest an upload may arrive, per second, after its first 10 s; a slower one is cut off with 408 (env PNP_HTTP_UPLOAD_MIN_RATE)")
	fs.StringVar(&h.maxUpload, "http-max-upload", env("PNP_HTTP_MAX_UPLOAD", "64MiB"), "largest upload (POST /v1/objects, the file of a multipart run or job) streamed into bucket uploads, e.g. 64MiB (env PNP_HTTP_MAX_UPLOAD)")
}

// config is the gateway's configuration from the flags. metrics is the
// process's one registry: /metrics serves it.
func (h *httpFlags) config(metrics *prometheus.Registry, log zerolog.Logger) (gateway.Config, error) {
	cfg := gateway.Config{Addr: h.addr, Token: h.token, CORSOrigin: h.cors, Metrics: metrics, Logger: log}
	n, err := imagefetch.ParseSize(h.maxUpload)
	if err == nil && n <= 0 {
		err = errors.New("0 would refuse every upload")
	}
	if err != nil {
		return cfg, fmt.Errorf("%w: --http-max-upload (PNP_HTTP_MAX_UPLOAD) %q: %v", errUsage, h.maxUpload, err)
	}
	cfg.MaxUpload = n
	rate, err := imagefetch.ParseSize(h.uploadMinRate)
	if err == nil && rate <= 0 {
		err = errors.New("want at least 1 byte")
	}
	if err != nil {
		return cfg, fmt.Errorf("%w: --http-upload-min-rate (PNP_HTTP_UPLOAD_MIN_RATE) %q: %v", errUsage, h.uploadMinRate, err)
	}
	cfg.UploadMinRate = rate
	if h.maxStreams <= 0 || h.maxUploads <= 0 {
		return cfg, fmt.Errorf("%w: --http-max-event-streams %d, --http-max-uploads %d: want 1 or more", errUsage, h.maxStreams, h.maxUploads)
	}
	cfg.MaxEventStreams, cfg.MaxUploads = h.maxStreams, h.maxUploads
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%w: --http %s: %v", errUsage, h.addr, err)
	}
	return cfg, nil
}

// storeTries bounds how long `pnp gateway` waits for the job streams to be
// provisioned (by a controller or pnp provision) before giving up.
const storeTries = 60

// openStoreWaiting binds to the job streams, waiting for them to be
// provisioned: the gateway does not depend on start order.
func openStoreWaiting(ctx context.Context, nf *natsFlags, nc *nats.Conn, log zerolog.Logger) (*jobs.Store, error) {
	js, err := nf.jetStream(nc)
	if err != nil {
		return nil, err
	}
	store, err := jobs.AwaitStore(ctx, js, jobs.StoreConfig{}, jobs.AwaitConfig{Tries: storeTries, OnRetry: func(try int, err error) {
		if try == 1 || !errors.Is(err, jobs.ErrNotProvisioned) {
			log.Warn().Err(err).Msg("job streams not available yet; retrying")
		}
	}})
	var gaveUp *jobs.AwaitError
	if errors.As(err, &gaveUp) {
		log.Error().Err(gaveUp.Err).Int("tries", gaveUp.Tries).Msg("giving up waiting for the job streams")
		return nil, fmt.Errorf("job streams not available (start 'pnp controller' or run 'pnp provision'): %w", gaveUp.Err)
	}
	return store, err
}

func cmdGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gateway", "pnp gateway [--server URL] [--http 127.0.0.1:8080] [--http-token T] [flags]", stdout)
	var (
		nf natsFlags
		lf logFlags
		hf httpFlags
		mf metricsFlag
		sh rollout.ShadowOptions
	)
	nf.register(fs)
	lf.register(fs)
	hf.register(fs)
	mf.register(fs)
	registerShadowFlags(fs, &sh.Concurrency, &sh.Compare, "runs past it are not shadowed (counted); -1: no shadow runs of requests")
	if err := fs.parse(args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	if hf.addr == "" {
		return fmt.Errorf("%w: --http '' leaves the gateway nothing to do", errUsage)
	}
	// The process's one metrics registry: /metrics serves it, and every
	// part of the process registers its collectors in it.
	metrics := newRegistry()
	cfg, err := hf.config(metrics, log)
	if err != nil {
		return err
	}
	if sh.Concurrency < -1 {
		return fmt.Errorf("%w: --shadow-concurrency %d: want -1 (off) or more", errUsage, sh.Concurrency)
	}
	cfg.Shadow = sh
	if mf.addr != "" {
		// The same registry, also without the API's token, on an address
		// of its own: for Prometheus inside a private network.
		stop, err := serveMetrics(ctx, mf.addr, metrics, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	if err := nf.check(); err != nil {
		return err
	}
	nc, err := nf.connectAndWait(ctx, "pnp gateway", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	store, err := openStoreWaiting(ctx, &nf, nc, log)
	if err != nil {
		return err
	}
	gw, err := gateway.New(nc, store, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", hf.addr)
	if err != nil {
		return fmt.Errorf("gateway: listen %s: %w", hf.addr, err)
	}
	// The address is printed once the discovery view has loaded: a client
	// that waits for it finds every algorithm that is served.
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ctx, ln) }()
	select {
	case <-gw.Ready():
		fmt.Fprintf(stdout, "gateway on http://%s/ (API /v1, reference /docs, OpenAPI /openapi.json)\n", ln.Addr())
	case err := <-served:
		served <- err
	}
	if err := <-served; err != nil {
		return err
	}
	return drainOnStop(nc, log)
}
