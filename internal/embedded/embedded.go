// Package embedded runs a NATS server with JetStream inside the process, for
// `pnp up` and for tests. It is the same server binary a deployment runs,
// configured in code.
package embedded

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/dirlock"
)

// Config configures an embedded server. The zero value is not valid: StoreDir
// is required so that JetStream data (jobs, results, discovery) lives where
// the caller decides.
type Config struct {
	// Host to listen on. Default "127.0.0.1": an embedded server is a local
	// tool and must not be reachable from the network unless asked.
	Host string
	// Port to listen on. 0 means the NATS default 4222; -1 picks a free port.
	Port int
	// StoreDir is the JetStream storage directory. Required.
	StoreDir string
	// ServerName identifies the server in logs and JetStream metadata.
	// Default "pnp".
	ServerName string
	// SyncAlways makes JetStream fsync every write before acknowledging it.
	SyncAlways bool
	// MaxPayload caps message size in bytes. 0 means the server default (1 MiB).
	MaxPayload int32
	// Logger receives the server's own log lines (notices at debug level,
	// warnings and errors at their level). Nil discards them.
	Logger *zerolog.Logger
	// ReadyTimeout bounds how long Start waits for the server to accept
	// connections. Default 10s.
	ReadyTimeout time.Duration
	// MonitorPort, when not 0, makes the server serve its HTTP monitoring
	// endpoints (/healthz, /varz, /jsz, ...) on MonitorHost:MonitorPort;
	// -1 picks a free port (Server.MonitorAddr tells which). Default 0:
	// none. The server's own (single) account is "$G", the name /jsz's
	// acc= parameter takes.
	MonitorPort int
	// MonitorHost is the monitoring endpoints' host. Default Host.
	MonitorHost string
	// JetStreamDomain names the server's JetStream domain, so that clients
	// of a leaf node connected to it reach its JetStream as
	// $JS.<domain>.API. Default none: only $JS.API.
	JetStreamDomain string
	// Leaf, when set, makes the server accept leaf node connections.
	Leaf *Leaf
}

// Leaf is where a server accepts leaf node connections and the one user
// they must authenticate as.
type Leaf struct {
	// Host and Port to listen on; Port -1 picks a free port.
	Host string
	Port int
	// User and Password every leaf node connection must present (the
	// remote's URL is nats-leaf://user:password@host:port). Both required:
	// a leaf node shares the server's account, jobs and buckets included.
	User, Password string
}

func (c *Config) setDefaults() {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = 4222
	}
	if c.ServerName == "" {
		c.ServerName = "pnp"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 10 * time.Second
	}
	if c.MonitorHost == "" {
		c.MonitorHost = c.Host
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.StoreDir == "" {
		errs = append(errs, errors.New("embedded: store dir is required"))
	}
	if c.Port < -1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("embedded: port %d out of range", c.Port))
	}
	if c.MonitorPort < -1 || c.MonitorPort > 65535 {
		errs = append(errs, fmt.Errorf("embedded: monitor port %d out of range", c.MonitorPort))
	}
	if strings.ContainsAny(c.JetStreamDomain, " \t\r\n.*>") {
		errs = append(errs, fmt.Errorf("embedded: JetStream domain %q is not one subject token", c.JetStreamDomain))
	}
	if l := c.Leaf; l != nil {
		if l.Port < -1 || l.Port == 0 || l.Port > 65535 {
			errs = append(errs, fmt.Errorf("embedded: leaf port %d out of range", l.Port))
		}
		if l.User == "" || l.Password == "" {
			errs = append(errs, errors.New("embedded: leaf connections need a user and a password"))
		}
	}
	return errors.Join(errs...)
}

// Options returns the server options for c, with defaults applied.
func (c Config) Options() *server.Options {
	c.setDefaults()
	o := &server.Options{
		ServerName:      c.ServerName,
		Host:            c.Host,
		Port:            c.Port,
		JetStream:       true,
		JetStreamDomain: c.JetStreamDomain,
		StoreDir:        c.StoreDir,
		SyncAlways:      c.SyncAlways,
		MaxPayload:      c.MaxPayload,
		NoSigs:          true,
		NoLog:           c.Logger == nil,
		HTTPHost:        c.MonitorHost,
		HTTPPort:        c.MonitorPort,
	}
	if l := c.Leaf; l != nil {
		o.LeafNode = server.LeafNodeOpts{Host: l.Host, Port: l.Port, Username: l.User, Password: l.Password}
	}
	return o
}

// LockStore creates the store directory dir and locks it for this process
// (dirlock.Acquire): it fails with an error wrapping dirlock.ErrInUse when
// another server uses it, or a directory above or below it. Every server
// on a store takes it first, since two servers on one store corrupt it and
// a server whose store directory is inside another's moves the other's
// data. Start does it; a caller building its own server from Options must.
func LockStore(dir string) (*dirlock.Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	return dirlock.Acquire(dir)
}

// Server is a running embedded server holding the lock on its store.
// Shutdown stops the server, then releases the lock.
type Server struct {
	*server.Server
	lock *dirlock.Lock
}

// Shutdown stops the server (the server's own Shutdown returns once its
// store is closed) and releases the store. Safe to call more than once.
func (s *Server) Shutdown() {
	s.Server.Shutdown()
	_ = s.lock.Release()
}

// WaitForShutdown waits until the server has stopped, then releases the
// store.
func (s *Server) WaitForShutdown() {
	s.Server.WaitForShutdown()
	_ = s.lock.Release()
}

// Start locks the store (LockStore; the error is LockStore's as it is),
// starts a server and waits until it accepts client connections. The
// caller owns the server: call Shutdown and WaitForShutdown to stop it.
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	lock, err := LockStore(cfg.StoreDir)
	if err != nil {
		return nil, err
	}
	s, err := start(cfg)
	if err != nil {
		_ = lock.Release()
		return nil, err
	}
	return &Server{Server: s, lock: lock}, nil
}

func start(cfg Config) (*server.Server, error) {
	s, err := server.NewServer(cfg.Options())
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	if cfg.Logger != nil {
		s.SetLoggerV2(serverLogger{cfg.Logger}, false, false, false)
	}
	s.Start()
	if !s.ReadyForConnections(cfg.ReadyTimeout) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded: server not ready after %s (is %s:%d already in use, or %s not writable?)", cfg.ReadyTimeout, cfg.Host, cfg.Port, cfg.StoreDir)
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		return nil, fmt.Errorf("embedded: JetStream did not start with store %s (not writable, or disk full?)", cfg.StoreDir)
	}
	return s, nil
}

// serverLogger adapts zerolog to the server's logger interface.
type serverLogger struct{ l *zerolog.Logger }

func (s serverLogger) Noticef(format string, v ...any) { s.l.Debug().Msgf(format, v...) }
func (s serverLogger) Warnf(format string, v ...any)   { s.l.Warn().Msgf(format, v...) }
func (s serverLogger) Fatalf(format string, v ...any)  { s.l.Error().Msgf(format, v...) }
func (s serverLogger) Errorf(format string, v ...any)  { s.l.Error().Msgf(format, v...) }
func (s serverLogger) Debugf(format string, v ...any)  { s.l.Trace().Msgf(format, v...) }
func (s serverLogger) Tracef(format string, v ...any)  { s.l.Trace().Msgf(format, v...) }
