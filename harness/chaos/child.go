package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/embedded"
	"github.com/pnpworker/pnpworker/internal/procstats"
	"github.com/pnpworker/pnpworker/runner"
)

// Stats is what the orchestrator reads about itself when sampling. Runner
// and controller processes are not asked by the harness: they report
// through the product's own surfaces (a runner's $SRV.STATS data, a
// controller's controller.StatsSubject).
type Stats struct {
	PID        int    `json:"pid"`
	Role       string `json:"role"`
	Goroutines int    `json:"goroutines"`
	HeapBytes  uint64 `json:"heap_bytes"`
	RSSBytes   uint64 `json:"rss_bytes"`
}

func selfStats(role string) Stats {
	p := procstats.Read()
	rss, _ := RSS(p.PID)
	return Stats{PID: p.PID, Role: role, Goroutines: p.Goroutines, HeapBytes: p.HeapBytes, RSSBytes: rss}
}

// RunnerChild configures a chaos runner process: the runner library
// serving chaos_work, exactly as `pnp runner` serves the built-in
// algorithms, plus the execution log and the stats responder.
type RunnerChild struct {
	Servers        string
	ExecDir        string
	MaxConcurrency int
	MaxPending     int
	Timeout        time.Duration
	DrainTimeout   time.Duration
	Logger         zerolog.Logger
}

// RunRunner serves chaos_work until ctx ends.
func RunRunner(ctx context.Context, c RunnerChild) error {
	xl, err := OpenExecLog(c.ExecDir)
	if err != nil {
		return err
	}
	defer xl.Close()
	alg, err := NewAlgorithm(xl, c.Timeout, c.MaxConcurrency, c.MaxPending)
	if err != nil {
		return err
	}
	nc, err := connect(ctx, c.Servers, "chaos runner", c.Logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	opts := []runner.Option{runner.WithLogger(c.Logger), runner.WithoutProvisioning(),
		runner.WithMetadata(map[string]string{"pid": strconv.Itoa(os.Getpid())})}
	if c.DrainTimeout > 0 {
		opts = append(opts, runner.WithDrainTimeout(c.DrainTimeout))
	}
	r, err := runner.New(nc, []*runner.Algorithm{alg}, opts...)
	if err != nil {
		return err
	}
	// The orchestrator provisions the bucket; a runner that starts while
	// NATS restarts retries until it can bind.
	for {
		err = r.Run(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		c.Logger.Warn().Err(err).Msg("runner start failed; retrying")
		r, _ = runner.New(nc, []*runner.Algorithm{alg}, opts...)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// NATSChild configures a NATS server process: the embedded server of
// `pnp up`, alone, so that it can be killed with SIGKILL.
type NATSChild struct {
	Port       int
	StoreDir   string
	SyncAlways bool
	// Name is the server name, unique in a cluster. Default "chaos".
	Name string
	// ClusterPort and Routes make the server a member of cluster "chaos".
	ClusterPort int
	Routes      string
	Logger      *zerolog.Logger
}

// RunNATS serves until ctx ends.
func RunNATS(ctx context.Context, c NATSChild) error {
	if c.Name == "" {
		c.Name = "chaos"
	}
	cfg := embedded.Config{Port: c.Port, StoreDir: c.StoreDir, SyncAlways: c.SyncAlways, ServerName: c.Name, Logger: c.Logger}
	if err := cfg.Validate(); err != nil {
		return err
	}
	// Like every server on a store: one at a time, none inside another's.
	lock, err := embedded.LockStore(c.StoreDir)
	if err != nil {
		return err
	}
	defer func() { _ = lock.Release() }()
	opts := cfg.Options()
	if c.ClusterPort != 0 {
		opts.Cluster = server.ClusterOpts{Name: "chaos", Host: "127.0.0.1", Port: c.ClusterPort}
		opts.Routes = server.RoutesFromStr(c.Routes)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("chaos: nats: %w", err)
	}
	if c.Logger != nil {
		srv.ConfigureLogger()
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return errors.New("chaos: nats not ready")
	}
	fmt.Fprintf(os.Stdout, "ready %s\n", srv.ClientURL())
	<-ctx.Done()
	srv.Shutdown()
	srv.WaitForShutdown()
	return nil
}

// connect connects as long-running pnp processes do: retrying until NATS
// is there, and reconnecting forever.
func connect(ctx context.Context, servers, name string, log zerolog.Logger) (*nats.Conn, error) {
	connected := make(chan struct{}, 1)
	nc, err := nats.Connect(servers,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(*nats.Conn) {
			select {
			case connected <- struct{}{}:
			default:
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("disconnected from NATS")
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info().Msg("reconnected to NATS") }),
	)
	if err != nil {
		return nil, fmt.Errorf("chaos: connect %s: %w", servers, err)
	}
	if nc.IsConnected() {
		return nc, nil
	}
	select {
	case <-connected:
		return nc, nil
	case <-ctx.Done():
		nc.Close()
		return nil, ctx.Err()
	}
}
