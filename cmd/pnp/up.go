package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	memeclassifier "github.com/pnpworker/pnpworker/algo/meme_classifier"
	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/gateway"
	"github.com/pnpworker/pnpworker/internal/embedded"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/worker"
)

func defaultDataDir() string {
	if d := os.Getenv("PNP_DATA"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "pnpworker")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "pnpworker")
	}
	return filepath.Join(os.TempDir(), "pnpworker")
}

func cmdUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("up", "pnp up [--listen 127.0.0.1:4222] [--data DIR] [--worker CMD]... [--worker-procs N|MIN:MAX] [flags]", stdout)
	var (
		lf     logFlags
		listen = fs.String("listen", env("PNP_LISTEN", "127.0.0.1:4222"), "address the embedded NATS server listens on (env PNP_LISTEN)")
		data   = fs.String("data", defaultDataDir(), "JetStream data directory; kept across restarts (env PNP_DATA)")
		algs   string
		images = fs.String("images-listen", env("PNP_IMAGES_LISTEN", ""), "also serve the demo images over HTTP on this loopback address, e.g. 127.0.0.1:0, which the image fetcher may then reach; default none: the demo images are in the inputs bucket (env PNP_IMAGES_LISTEN)")
		imf    imageFlags
		mf     metricsFlag
		hf     httpFlags
		wf     workerFlags
		store  jobs.StoreConfig
		tf     upTopologyFlags
	)
	tf.register(fs)
	historyRate := fs.Float64("history-rate", envFloat("PNP_HISTORY_RATE", rollout.DefaultHistoryRate), "share of succeeded jobs recorded in HISTORY for pnp replay, 0..1; negative: none (env PNP_HISTORY_RATE)")
	registerAlgorithmsFlag(fs, &algs)
	var maxAge, maxUnserved time.Duration
	registerJobAgeFlags(fs, &maxAge, &maxUnserved, "")
	monitor := fs.String("nats-monitor", env("PNP_NATS_MONITOR", ""), "also serve the embedded NATS server's HTTP monitoring endpoints (/healthz, /varz, /jsz: what KEDA's nats-jetstream scaler reads, with account \"$G\") on this address, e.g. 127.0.0.1:8222 (port 0: a free one); default none (env PNP_NATS_MONITOR)")
	wf.register(fs)
	lf.register(fs)
	imf.register(fs)
	registerStoreLimits(fs, &store, false)
	mf.register(fs)
	hf.register(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	if err := store.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	// One person's pnp up keeps uploads (and the demo images the banner
	// names) a day, not the hour a shared deployment does.
	store.Inputs.TTL = 24 * time.Hour
	// The process's one metrics registry: the gateway's /metrics and
	// --metrics serve it, and every part of the process registers its
	// collectors in it (a worker's runner, made anew at each restart of
	// its process, registers none).
	reg := newRegistry()
	var gwCfg gateway.Config
	if hf.addr != "" {
		if gwCfg, err = hf.config(reg, log.With().Str("component", "gateway").Logger()); err != nil {
			return err
		}
	}
	host, port, err := splitListen("--listen", *listen)
	if err != nil {
		return err
	}
	leaf, err := tf.leaf()
	if err != nil {
		return err
	}
	monHost, monPort, err := monitorAddr(*monitor)
	if err != nil {
		return err
	}
	budget, err := imf.budget()
	if err != nil {
		return err
	}
	// Command-line mistakes first: they must not create the data directory.
	chosen, err := chooseBuiltins(algs, algoConfig{})
	if err != nil {
		return err
	}
	if err := wf.check(); err != nil {
		return err
	}
	if len(chosen) == 0 && len(wf.commands) == 0 {
		return fmt.Errorf("%w: --algorithms none and no --worker: nothing to serve", errUsage)
	}
	allow := imagefetch.ParseAllow(imf.allow)
	var imagesURL string
	if *images != "" {
		// The optional demo web server is the one loopback address the
		// fetcher may reach.
		base, hostPort, stopImages, err := serveDemoImages(*images, log)
		if err != nil {
			return err
		}
		defer stopImages()
		imagesURL, allow = base, append(allow, hostPort)
	}
	if _, err := newAlgoConfig(imf.gallery, allow, imf.objectBuckets(), nil, budget, log); err != nil {
		return err
	}
	// One process per data directory, and no data directory inside or
	// above another's: embedded.Start locks the directory before the
	// server opens it, so a second pnp up fails at once instead of opening
	// (or moving) the live JetStream store.
	srvLog := log.With().Str("component", "nats").Logger()
	srv, err := embedded.Start(embedded.Config{Host: host, Port: port, StoreDir: *data, Logger: &srvLog, MonitorHost: monHost, MonitorPort: monPort, JetStreamDomain: tf.domain, Leaf: leaf})
	if err != nil {
		return err
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		log.Info().Msg("NATS stopped")
	}()
	url := srv.ClientURL()
	monitorURL := ""
	if a := srv.MonitorAddr(); a != nil {
		monitorURL = "http://" + a.String()
	}

	nc, err := nats.Connect(url, nats.InProcessServer(srv), nats.Name("pnp up"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to embedded NATS: %w", err)
	}
	defer nc.Close()

	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	algCfg, err := newAlgoConfig(imf.gallery, allow, imf.objectBuckets(), js, budget, log)
	if err != nil {
		return err
	}
	list, err := selectAlgorithmsWith(algs, algCfg)
	if err != nil {
		return err
	}
	// The built-in runner and every worker's runner (made anew at each
	// restart of its process) report into one set of runner metrics.
	runnerMetrics, err := runner.NewMetrics(reg)
	if err != nil {
		return err
	}
	workerMetrics, err := worker.NewMetrics(reg)
	if err != nil {
		return err
	}
	workers, err := wf.build(nc, workerDeps{js: js, metrics: workerMetrics}, log, runner.WithSharedMetrics(runnerMetrics))
	if err != nil {
		return err
	}
	var r *runner.Runner
	if len(list) > 0 {
		if r, err = runner.New(nc, list, runner.WithLogger(log.With().Str("component", "runner").Logger()), runner.WithSharedMetrics(runnerMetrics)); err != nil {
			return err
		}
	}
	ctl, err := controller.New(nc, controller.Config{Store: store, MaxJobAge: maxAge, MaxUnservedJobAge: maxUnserved, History: rollout.HistoryConfig{Rate: *historyRate}, Logger: log.With().Str("component", "controller").Logger(), Metrics: reg})
	if err != nil {
		return err
	}
	if mf.addr != "" {
		stop, err := serveMetrics(ctx, mf.addr, reg, log.With().Str("component", "metrics").Logger())
		if err != nil {
			return err
		}
		defer stop()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	running := 0
	errc := make(chan error, 3+len(workers))
	run := func(fn func(context.Context) error) {
		running++
		go func() { errc <- fn(ctx) }()
	}
	// stop cancels every part and collects what they return.
	stop := func(errs ...error) error {
		cancel()
		for ; running > 0; running-- {
			errs = append(errs, <-errc)
		}
		return errors.Join(errs...)
	}
	run(ctl.Run)
	for _, w := range workers {
		run(w.Run)
	}
	ready := []<-chan struct{}{ctl.Ready()}
	if r != nil {
		run(r.Run)
		ready = append(ready, r.Started())
	}
	for _, started := range ready {
		select {
		case err := <-errc:
			running--
			return stop(err)
		case <-started:
		}
	}
	httpURL := ""
	if hf.addr != "" {
		gw, ln, err := startGateway(ctx, nc, gwCfg)
		if err != nil {
			return stop(err)
		}
		httpURL = "http://" + ln.Addr().String()
		run(func(ctx context.Context) error { return gw.Serve(ctx, ln) })
	}
	// The demo images go into the inputs bucket, so that every runner —
	// also one started later on another machine — can read them.
	demo, err := putDemoImages(ctx, js, log)
	if err != nil {
		return stop(err)
	}
	// The banner lists what the workers serve: wait for their hellos,
	// at most their handshake timeout (a model may take that long to
	// load); one that failed, or is not serving by then, is named as
	// starting.
	served := append([]*runner.Algorithm(nil), list...)
	var starting []string
	helloBy := time.NewTimer(wf.handshake)
	defer helloBy.Stop()
hellos:
	for i, w := range workers { // one per --worker command, in order
		select {
		case err := <-errc:
			running--
			return stop(err)
		case <-w.Serving():
			served = append(served, w.Algorithms()...)
		case <-w.Failed():
			// Restarted with backoff; the log says why.
			starting = append(starting, wf.commands[i])
		case <-helloBy.C:
			starting = append(starting, wf.commands[i:]...)
			break hellos
		}
	}
	printBanner(stdout, banner{url: url, data: *data, images: imagesURL, http: httpURL, monitor: monitorURL, leaf: tf.leafURL(srv), domain: tf.domain, demo: demo, pnp: pnpCommand(), algs: served, starting: starting, workers: wf.shown()})
	// The first part to stop stops the others.
	err = <-errc
	running--
	return stop(err)
}

// monitorAddr parses --nats-monitor into the embedded server's monitoring
// host and port: port 0 asks for a free one, "" for none (port 0).
func monitorAddr(addr string) (string, int, error) {
	if addr == "" {
		return "", 0, nil
	}
	host, port, err := splitListen("--nats-monitor", addr)
	if err != nil {
		return "", 0, err
	}
	if port == 0 {
		port = -1
	}
	return host, port, nil
}

// startGateway opens the job streams (the controller provisioned them)
// and listens on cfg.Addr.
func startGateway(ctx context.Context, nc *nats.Conn, cfg gateway.Config) (*gateway.Gateway, net.Listener, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	store, err := jobs.OpenStore(ctx, js, jobs.StoreConfig{})
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: %w", err)
	}
	gw, err := gateway.New(nc, store, cfg)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: listen %s (--http; '' turns it off): %w", cfg.Addr, err)
	}
	return gw, ln, nil
}

// demoPrefix starts the names of the demo images in the inputs bucket.
const demoPrefix = "demo/"

// putDemoImages uploads the meme_classifier demo gallery and samples to the
// inputs bucket as demo/gallery/<file> and demo/samples/<file> and returns
// their references by that name.
func putDemoImages(ctx context.Context, js jetstream.JetStream, log zerolog.Logger) (map[string]string, error) {
	refs := map[string]string{}
	for _, dir := range []struct {
		name string
		fsys fs.FS
	}{{"gallery", memeclassifier.DemoGallery()}, {"samples", memeclassifier.DemoSamples()}} {
		entries, err := fs.ReadDir(dir.fsys, ".")
		if err != nil {
			return nil, fmt.Errorf("demo images: %w", err)
		}
		for _, e := range entries {
			f, err := dir.fsys.Open(e.Name())
			if err != nil {
				return nil, fmt.Errorf("demo images: %w", err)
			}
			name := dir.name + "/" + e.Name()
			ref, err := objref.Put(ctx, js, objref.InputsBucket, demoPrefix+name, f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("demo images: %w", err)
			}
			refs[name] = ref.String()
		}
	}
	log.Info().Int("objects", len(refs)).Str("bucket", objref.InputsBucket).Msg("demo images stored")
	return refs, nil
}

// pnpCommand is how the banner spells pnp: "pnp" when it is on PATH, the
// go run form (which works from the repository) otherwise.
func pnpCommand() string {
	if _, err := exec.LookPath("pnp"); err == nil {
		return "pnp"
	}
	return "go run ./cmd/pnp"
}

// banner is what `pnp up` prints once it serves.
type banner struct {
	url, data string
	leaf      string            // nats-leaf:// URL leaf nodes connect to (password hidden), or ""
	domain    string            // JetStream domain, or ""
	images    string            // base URL of the optional demo web server, or ""
	http      string            // base URL of the HTTP API (--http), or ""
	monitor   string            // base URL of the NATS monitoring endpoints (--nats-monitor), or ""
	demo      map[string]string // demo image references by gallery/<file>, samples/<file>
	pnp       string            // how to spell pnp: "pnp" or "go run ./cmd/pnp"
	algs      []*runner.Algorithm
	starting  []string // worker commands that had not said hello yet
	workers   string   // how many processes of each --worker command run, or "" with none
}

// printBanner prints the banner: every command in it works as typed
// against this pnp up (TestBannerCommands runs them).
func printBanner(w io.Writer, b banner) {
	var names []string
	serving := map[string]bool{}
	for _, a := range b.algs {
		names = append(names, a.Name()+" "+a.Spec().Version)
		serving[a.Name()] = true
	}
	server, pnpServer := "", ""
	if b.url != nats.DefaultURL {
		server, pnpServer = " -s "+b.url, " --server "+b.url
	}
	pnp := b.pnp
	shown := strings.Join(names, ", ")
	if len(names) == 0 {
		shown = "nothing yet"
	}
	fmt.Fprintf(w, `
pnp is up
  NATS      %s   (JetStream data in %s)
  serving   %s
`, b.url, b.data, shown)
	if b.domain != "" {
		fmt.Fprintf(w, "  domain    %s   (JetStream domain: leaf node clients use --js-domain %s)\n", b.domain, b.domain)
	}
	if b.leaf != "" {
		fmt.Fprintf(w, "  leaf      %s   (leaf nodes connect here)\n", b.leaf)
	}
	if b.monitor != "" {
		fmt.Fprintf(w, "  monitor   %s/jsz?acc=$G&consumers=true&config=true   (NATS monitoring; KEDA account \"$G\")\n", b.monitor)
	}
	if b.workers != "" {
		fmt.Fprintf(w, "  workers   %s\n", b.workers)
	}
	for _, c := range b.starting {
		fmt.Fprintf(w, "  starting  worker %s (no hello yet: its algorithms are served once it says hello; the log says why if it fails)\n", c)
	}
	if pnp != "pnp" {
		fmt.Fprintf(w, "  note      pnp is not on PATH: run the commands below from the repository, or install pnp with: go install ./cmd/pnp\n")
	}
	fmt.Fprintf(w, `
try, with the nats CLI:
  nats%[1]s kv ls discovery
`, server)
	if serving["language_detection"] {
		fmt.Fprintf(w, `  nats%[1]s req run.language_detection '{"text":"Le renard brun saute par-dessus le chien paresseux"}'
  nats%[1]s req run.language_detection '{"text":42}'        # a 400 with the schema violation
`, server)
	}
	fmt.Fprintf(w, `  nats%[1]s micro ls
  %[2]s algorithms%[3]s    # every algorithm with its input schema
`, server, pnp, pnpServer)
	fmt.Fprintf(w, `
jobs (durable; results in KV bucket results):
`)
	if serving["language_detection"] {
		fmt.Fprintf(w, `  nats%[1]s pub jobs.language_detection '{"text":"Die Mannschaften schreiben Algorithmen und wollen sie auf neue Daten anwenden"}' -H Nats-Msg-Id:hello
  nats%[1]s kv get --raw results hello
  %[2]s submit%[3]s --wait language_detection '{"text":"El rápido zorro marrón salta sobre el perro perezoso"}'
`, server, pnp, pnpServer)
	}
	fmt.Fprintf(w, "  %[1]s jobs%[2]s\n", pnp, pnpServer)
	if serving["meme_classifier"] || serving["image_info"] || serving["image_thumbnail"] {
		printDemoImages(w, b, serving, server, pnpServer)
	}
	if b.http != "" {
		fmt.Fprintf(w, "\nHTTP: dashboard %s/  reference %s/docs\n", b.http, b.http)
		if serving["language_detection"] {
			fmt.Fprintf(w, "  curl -s %s/v1/algorithms/language_detection/run -H 'Content-Type: application/json' -d '{\"text\":\"Le renard brun saute par-dessus le chien paresseux\"}'\n", b.http)
		}
	}
	fmt.Fprint(w, "\nCtrl-C stops it.\n")
}

// printDemoImages prints the banner's commands on the demo images.
func printDemoImages(w io.Writer, b banner, serving map[string]bool, server, pnpServer string) {
	pnp := b.pnp
	fmt.Fprintf(w, "\ndemo images in the object store (bucket %s; every runner can read them):\n", objref.InputsBucket)
	if serving["meme_classifier"] {
		fmt.Fprintf(w, "  nats%s req run.meme_classifier '{\"image_url\":\"%s\"}'\n", server, b.demo["samples/drake_pref_captioned.jpg"])
		fmt.Fprintf(w, "  nats%s req run.meme_classifier '{\"image_url\":\"%s\"}'   # unknown\n", server, b.demo["samples/unrelated_photo.jpg"])
		fmt.Fprintf(w, "  nats%s req run.meme_classifier '{\"image_url\":\"http://169.254.169.254/latest/meta-data/\"}'   # a 422: blocked address\n", server)
	}
	if serving["image_info"] {
		fmt.Fprintf(w, "  nats%s req run.image_info '{\"image_url\":\"%s\"}'\n", server, b.demo["gallery/stonks.png"])
	}
	if serving["image_thumbnail"] {
		fmt.Fprintf(w, "  %s submit%s --wait image_thumbnail '{\"image_url\":\"%s\",\"max_side\":64}'\n", pnp, pnpServer, b.demo["gallery/stonks.png"])
	}
	fmt.Fprintf(w, "  upload your own files with: %s put%s FILE...   (prints their obj:// references)\n", pnp, pnpServer)
	if b.images != "" {
		fmt.Fprintf(w, "\ndemo images also on %s/ (gallery/ and samples/; the image fetcher is allowed this one loopback address)\n", b.images)
	}
}
