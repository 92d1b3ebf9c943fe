// Package natstest starts real embedded NATS servers with JetStream for
// tests, reachable over TCP loopback, and restarts them on the same store.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/internal/embedded"
)

// Server is an embedded NATS server owned by one test. It is shut down by
// t.Cleanup.
type Server struct {
	t    testing.TB
	cfg  embedded.Config
	srv  *embedded.Server
	url  string
	port int
}

// Option changes the server's configuration before it starts.
type Option func(*embedded.Config)

// MaxPayload sets the server's max_payload, so tests of size limits can
// use small messages.
func MaxPayload(n int32) Option { return func(c *embedded.Config) { c.MaxPayload = n } }

// Monitor makes the server serve its HTTP monitoring endpoints (/jsz,
// /varz, ...) on a free loopback port; Server.MonitorURL tells where.
func Monitor() Option { return func(c *embedded.Config) { c.MonitorPort = -1 } }

// Start starts a server on a free loopback port with a store in t.TempDir().
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{t: t, cfg: embedded.Config{Port: -1, StoreDir: t.TempDir()}}
	for _, o := range opts {
		o(&s.cfg)
	}
	s.start()
	t.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	srv, err := embedded.Start(s.cfg)
	if err != nil {
		s.t.Fatalf("natstest: %v", err)
	}
	s.srv = srv
	s.url = srv.ClientURL()
	if s.port == 0 {
		// Pin the port so a restart comes back at the same URL and
		// clients reconnect by themselves.
		s.port = srv.Addr().(*net.TCPAddr).Port
		s.cfg.Port = s.port
	}
}

// URL is the client URL, e.g. nats://127.0.0.1:34567.
func (s *Server) URL() string { return s.url }

// MonitorURL is the base URL of the monitoring endpoints, e.g.
// http://127.0.0.1:34568, of a server started with Monitor.
func (s *Server) MonitorURL() string {
	s.t.Helper()
	a := s.srv.MonitorAddr()
	if a == nil {
		s.t.Fatal("natstest: the server serves no monitoring endpoint; start it with natstest.Monitor()")
	}
	return "http://" + a.String()
}

// Server returns the running server.
func (s *Server) Server() *server.Server { return s.srv.Server }

// QueueSubscribers reports how many subscriptions in queue group queue the
// server holds on exactly subject: a request to subject goes to one of
// them. It is what a test polls for after a change of queue membership,
// rather than inferring it from how replies happen to fall.
func (s *Server) QueueSubscribers(subject, queue string) int {
	s.t.Helper()
	sz, err := s.srv.Subsz(&server.SubszOptions{Subscriptions: true, Test: subject, Limit: 1 << 16})
	if err != nil {
		s.t.Fatalf("natstest: subscriptions on %s: %v", subject, err)
	}
	n := 0
	for _, sd := range sz.Subs {
		if sd.Subject == subject && sd.Queue == queue {
			n++
		}
	}
	return n
}

// Shutdown stops the server and waits for it. Safe to call twice.
func (s *Server) Shutdown() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Restart shuts the server down and starts it again on the same port with
// the same store, like an operator restarting NATS.
func (s *Server) Restart() {
	s.t.Helper()
	s.Shutdown()
	s.start()
}

// Connect opens a client connection that retries forever on disconnect, as
// long-running pnp processes do, and closes it at cleanup.
func (s *Server) Connect(opts ...nats.Option) *nats.Conn {
	s.t.Helper()
	base := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.Timeout(2 * time.Second),
	}
	nc, err := nats.Connect(s.url, append(base, opts...)...)
	if err != nil {
		s.t.Fatalf("natstest: connect %s: %v", s.url, err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

// Eventually polls cond every 10ms until it returns true or timeout passes,
// then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: timed out after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
