package gateway

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/rollout"
)

// Defaults of Config.
const (
	DefaultAddr              = "127.0.0.1:8080"
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxWait           = 2 * time.Minute
	DefaultStatsTimeout      = 300 * time.Millisecond
	DefaultStatsTTL          = time.Second
	// DefaultMaxEventStreams bounds the open GET /v1/events streams
	// (each holds a buffer of 256 events, about 30 KB with its
	// connection).
	DefaultMaxEventStreams = 256
	// DefaultMaxUploads bounds the uploads in progress at once.
	DefaultMaxUploads = 32
	// DefaultUploadMinRate is the slowest an upload may arrive after its
	// first 10 seconds, in bytes per second.
	DefaultUploadMinRate = 16 << 10
)

// Config configures a Gateway. The zero value serves on DefaultAddr, without
// a token (so only on loopback), without CORS, with its own metrics
// registry and a silent logger.
type Config struct {
	// Addr is the address Run listens on. Default DefaultAddr. Any
	// address that is not loopback needs Token.
	Addr string
	// Token, when set, is the bearer token every API request must carry
	// (Authorization: Bearer <token>, or the pnp_token cookie the
	// dashboard sets). /healthz, /readyz and the static pages are open.
	Token string
	// CORSOrigin, when set, is the one origin browsers may call the API
	// from. Empty: no CORS headers at all.
	CORSOrigin string
	// Metrics is the registry the gateway's HTTP metrics are registered
	// in and that /metrics serves. Nil: a registry of its own.
	Metrics *prometheus.Registry
	// Logger receives the gateway's logs. Zero value: nothing is logged.
	Logger zerolog.Logger
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are the
	// http.Server's. Routes that wait on purpose (run, long-poll, events)
	// extend their own write deadline. Defaults: the Default* constants.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// MaxWait caps ?wait= of GET /v1/jobs/{id}. Default DefaultMaxWait.
	MaxWait time.Duration
	// MaxUpload caps the bytes of one upload (POST /v1/objects, the file
	// of a multipart run or job) streamed into the uploads bucket. Default
	// DefaultMaxUpload; the bucket's own limits still apply.
	MaxUpload int64
	// MaxEventStreams bounds the GET /v1/events streams open at once;
	// past it a new one is refused with 503. Default
	// DefaultMaxEventStreams.
	MaxEventStreams int
	// MaxUploads bounds the uploads (POST /v1/objects, multipart runs and
	// jobs) in progress at once; past it a new one is refused with 503.
	// Default DefaultMaxUploads.
	MaxUploads int
	// UploadMinRate is the slowest, in bytes per second, an upload may
	// arrive on average after its first 10 seconds; a slower one is cut
	// off with 408. Default DefaultUploadMinRate.
	UploadMinRate int64
	// StatsTimeout bounds the collection of $SRV.STATS replies; StatsTTL
	// is how long collected stats are reused. Defaults DefaultStatsTimeout
	// and DefaultStatsTTL.
	StatsTimeout time.Duration
	StatsTTL     time.Duration
	// Shadow configures shadow runs of requests: when an algorithm's
	// route names a shadow version (docs/ROLLOUT.md), each run the stable
	// version answered also runs on the shadow, in the background, and
	// both answers are compared into COMPARE, as the controller does for
	// jobs. Shadow.Concurrency < 0 turns it off (and the routes watch with
	// it); 0 means rollout.DefaultShadowConcurrency. The gateway sets
	// Logger.
	Shadow rollout.ShadowOptions
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.MaxWait, DefaultMaxWait)
	def(&c.StatsTimeout, DefaultStatsTimeout)
	def(&c.StatsTTL, DefaultStatsTTL)
	if c.MaxUpload == 0 {
		c.MaxUpload = DefaultMaxUpload
	}
	if c.MaxEventStreams == 0 {
		c.MaxEventStreams = DefaultMaxEventStreams
	}
	if c.MaxUploads == 0 {
		c.MaxUploads = DefaultMaxUploads
	}
	if c.UploadMinRate == 0 {
		c.UploadMinRate = DefaultUploadMinRate
	}
	if c.Metrics == nil {
		c.Metrics = prometheus.NewRegistry()
	}
}

// ErrTokenRequired is wrapped by Validate's error when the address is not
// loopback and no token is set.
var ErrTokenRequired = errors.New("a bearer token is required on a non-loopback address")

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	addr := c.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		errs = append(errs, fmt.Errorf("address %q: want host:port", addr))
	} else if !Loopback(host) && c.Token == "" {
		errs = append(errs, fmt.Errorf("address %q: %w", addr, ErrTokenRequired))
	}
	for name, d := range map[string]time.Duration{
		"read header timeout": c.ReadHeaderTimeout, "read timeout": c.ReadTimeout,
		"write timeout": c.WriteTimeout, "idle timeout": c.IdleTimeout, "max wait": c.MaxWait,
		"stats timeout": c.StatsTimeout, "stats ttl": c.StatsTTL,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", name, d))
		}
	}
	if c.MaxUpload < 0 {
		errs = append(errs, fmt.Errorf("max upload %d is negative", c.MaxUpload))
	}
	if c.MaxEventStreams < 0 {
		errs = append(errs, fmt.Errorf("max event streams %d is negative", c.MaxEventStreams))
	}
	if c.MaxUploads < 0 {
		errs = append(errs, fmt.Errorf("max uploads %d is negative", c.MaxUploads))
	}
	if c.UploadMinRate < 0 {
		errs = append(errs, fmt.Errorf("upload min rate %d is negative", c.UploadMinRate))
	}
	return errors.Join(errs...)
}

// Loopback reports whether host (a name or an IP, without port) only
// reaches this machine: localhost, 127.0.0.0/8 or ::1. The empty host
// (every interface) is not loopback.
func Loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
