// Package imagefetch fetches and decodes images from URLs that callers
// supply, which makes it a server-side request forgery target: everything
// here assumes the URL is hostile.
//
// A Fetcher accepts http, https, data: and obj:// URLs only. An obj://
// URL (package objref: obj://<bucket>/<name>) is read from the JetStream
// Object Store through the NATS connection the operator gave the Fetcher
// (Config.Objects), from the buckets Config.Buckets lists only, under the
// same size, pixel, decode and time limits as HTTP: an object over
// Config.MaxBytes is refused from its metadata before any of it is read.
// It opens no socket, so the address guard below does not apply to it.
//
// For http and https: Every TCP connection,
// on every redirect hop and after DNS resolution, passes a dialer-level
// guard (code.dny.dev/ssrf plus our own rules) that refuses loopback,
// private, link-local, cloud metadata, multicast and other special-purpose
// addresses unless an operator allowlisted them; link-local, metadata,
// unspecified and multicast addresses can never be allowed. Proxies from
// the environment are ignored. Redirects, connect time, total time, body
// size and decoded pixels are all bounded, and content is identified by its
// bytes, not by the Content-Type header.
//
// Decoding is bounded in bytes, not only pixels: before decoding, the
// memory decoding will take is computed from the header (see Decode) and an
// image over Config.MaxDecodeBytes is refused. Then the image reserves that
// much of a per-process Budget shared by every Fetcher (Config.Budget)
// until the caller releases it (Image.Release); when the budget is full the
// request waits a little (Config.DecodeWait) and is then turned away with a
// 503 marked not started, so a job controller retries it later without
// counting an attempt.
//
// Every failure is a *protocol.Error whose message is safe to show the caller
// and whose cause matches one of the Err* sentinels with errors.Is:
//
//	400 ErrInvalidURL   malformed URL, unsupported scheme (file:, ftp:, ...), credentials in the URL, bad data: or obj:// URL, obj:// without Config.Objects
//	413 ErrTooLarge     body or object over Config.MaxBytes, image over Config.MaxPixels or Config.MaxDecodeBytes
//	422 ErrBlocked      the destination address or port, or the object's bucket, is not allowed
//	422 ErrUnreachable  DNS failure, connection refused, TLS failure, too many redirects, no such object
//	422 ErrHTTPStatus   the server answered something other than 200
//	422 ErrNotImage     the body is not an image in a supported format, or is corrupt
//	503 ErrBusy         the decode budget stayed full for Config.DecodeWait (NotStarted)
//	504 ErrTimeout      connect or total time budget exceeded
//
// Timeouts and a full decode budget are the 5xx: the only failures worth
// retrying.
package imagefetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/protocol"
)

// Sentinels for errors.Is on the errors a Fetcher returns. Each *protocol.Error
// from this package wraps exactly one of them.
var (
	ErrInvalidURL  = errors.New("invalid image url")
	ErrBlocked     = errors.New("blocked address")
	ErrUnreachable = errors.New("unreachable")
	ErrHTTPStatus  = errors.New("unexpected http status")
	ErrTooLarge    = errors.New("too large")
	ErrNotImage    = errors.New("not an image")
	ErrTimeout     = errors.New("timeout")
	ErrBusy        = errors.New("decode budget full")
)

// Defaults of Config's zero values.
const (
	DefaultMaxBytes       = 10 << 20 // 10 MiB
	DefaultMaxPixels      = 1 << 24  // 16 Mpx, e.g. 4096×4096
	DefaultMaxDecodeBytes = 256 << 20
	DefaultDecodeWait     = 5 * time.Second
	DefaultMaxRedirects   = 3
	DefaultConnectTimeout = 3 * time.Second
	DefaultTimeout        = 10 * time.Second
	DefaultUserAgent      = "pnpworker-imagefetch/1.0"
)

// DefaultPorts are the destination ports open to addresses that are not
// allowlisted.
var DefaultPorts = []uint16{80, 443}

// Config configures a Fetcher. The zero value is a safe default: public
// addresses on ports 80 and 443 only.
type Config struct {
	// Allow lists destinations the operator trusts although the guard would
	// block them, for internal image hosts. An entry is a CIDR
	// ("10.20.0.0/16") or an IP address, open on every port, or a host:port
	// ("images.internal:8080", "127.0.0.1:9000", "[::1]:9000"), matched
	// against the URL's host and port as written, whatever the name resolves
	// to. Link-local (169.254.0.0/16, fe80::/10, where cloud metadata lives),
	// unspecified, multicast and broadcast addresses cannot be allowed.
	Allow []string
	// Ports are the destination ports allowed for addresses not in Allow.
	// Default (nil) DefaultPorts, 80 and 443; an empty non-nil list allows
	// only what Allow lists.
	Ports []uint16
	// MaxBytes caps the encoded image, on the wire or in a data: URL.
	// Default DefaultMaxBytes.
	MaxBytes int64
	// MaxPixels caps width×height, checked from the image header before
	// anything is decoded. Default DefaultMaxPixels.
	MaxPixels int64
	// MaxDecodeBytes caps the memory decoding one image may take, computed
	// from the header before anything is decoded (see Decode): a 16-bit
	// RGBA picture takes 8 bytes per pixel, a paletted one 1. Default
	// DefaultMaxDecodeBytes, and never more than the Budget's size.
	MaxDecodeBytes int64
	// Budget bounds the memory all decodes hold at once; share one between
	// the Fetchers of a process. Default: a Budget of DefaultDecodeBudget
	// for this Fetcher alone.
	Budget *Budget
	// DecodeWait is how long a request waits for room in the Budget before
	// it is refused with a 503 (ErrBusy, not started); never more than half
	// the time its context has left, so the decode keeps the other half.
	// Default DefaultDecodeWait; negative refuses at once.
	DecodeWait time.Duration
	// MaxRedirects is how many redirects are followed. Default
	// DefaultMaxRedirects; negative follows none.
	MaxRedirects int
	// ConnectTimeout bounds each TCP connect and TLS handshake. Default
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Timeout bounds a whole fetch: connects, redirects, headers and body.
	// The caller's context may shorten it. Default DefaultTimeout.
	Timeout time.Duration
	// UserAgent is sent with every request. Default DefaultUserAgent.
	UserAgent string
	// NoDataURLs refuses data: URLs. Default: base64 data: URLs are accepted.
	NoDataURLs bool
	// Objects reads obj:// references, normally over the runner's own NATS
	// connection. Default (nil): obj:// URLs are refused with a 400.
	Objects jetstream.JetStream
	// Buckets lists the object store buckets obj:// URLs may name. Default
	// (nil) DefaultBuckets, the inputs and uploads buckets; an empty non-nil list
	// allows none.
	Buckets []string
}

// DefaultBuckets are the buckets obj:// URLs may name by default.
var DefaultBuckets = []string{objref.InputsBucket, objref.UploadsBucket}

func (c *Config) setDefaults() {
	if c.Ports == nil {
		c.Ports = DefaultPorts
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxPixels == 0 {
		c.MaxPixels = DefaultMaxPixels
	}
	if c.MaxDecodeBytes == 0 {
		c.MaxDecodeBytes = DefaultMaxDecodeBytes
	}
	if c.Budget == nil {
		c.Budget, _ = NewBudget(0)
	}
	c.MaxDecodeBytes = min(c.MaxDecodeBytes, c.Budget.Size())
	if c.DecodeWait == 0 {
		c.DecodeWait = DefaultDecodeWait
	}
	if c.MaxRedirects == 0 {
		c.MaxRedirects = DefaultMaxRedirects
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.UserAgent == "" {
		c.UserAgent = DefaultUserAgent
	}
	if c.Buckets == nil {
		c.Buckets = DefaultBuckets
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("max bytes %d is negative", c.MaxBytes))
	}
	if c.MaxPixels < 0 {
		errs = append(errs, fmt.Errorf("max pixels %d is negative", c.MaxPixels))
	}
	if c.MaxDecodeBytes < 0 {
		errs = append(errs, fmt.Errorf("max decode bytes %d is negative", c.MaxDecodeBytes))
	}
	if c.ConnectTimeout < 0 {
		errs = append(errs, fmt.Errorf("connect timeout %s is negative", c.ConnectTimeout))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %s is negative", c.Timeout))
	}
	for _, p := range c.Ports {
		if p == 0 {
			errs = append(errs, errors.New("port 0 is not a port"))
		}
	}
	if _, err := newPolicy(c.Allow, c.Ports); err != nil {
		errs = append(errs, err)
	}
	for _, b := range c.Buckets {
		if !objref.ValidBucket(b) {
			errs = append(errs, fmt.Errorf("bucket %q is not a bucket name", b))
		}
	}
	return errors.Join(errs...)
}

// ParseAllow splits a comma- or space-separated allowlist, as read from a
// flag or environment variable, into Config.Allow entries. It does not
// validate them; Config.Validate does.
func ParseAllow(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// Fetcher fetches and decodes images under one Config. It is safe for
// concurrent use and keeps a pool of idle connections.
type Fetcher struct {
	cfg    Config
	policy *policy
	client *http.Client
}

// New validates cfg and returns a Fetcher.
func New(cfg Config) (*Fetcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("imagefetch: %w", err)
	}
	cfg.setDefaults()
	pol, err := newPolicy(cfg.Allow, cfg.Ports)
	if err != nil {
		return nil, fmt.Errorf("imagefetch: %w", err)
	}
	f := &Fetcher{cfg: cfg, policy: pol}
	tr := &http.Transport{
		Proxy:                  nil, // never from the environment: the guard must see the real destination
		DialContext:            f.dialContext,
		TLSHandshakeTimeout:    cfg.ConnectTimeout,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxIdleConns:           32,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        30 * time.Second,
		DisableCompression:     true, // the cap applies to bytes as sent
		MaxResponseHeaderBytes: 64 << 10,
	}
	f.client = &http.Client{Transport: tr, CheckRedirect: f.checkRedirect}
	return f, nil
}

// Config returns the configuration in use, defaults applied.
func (f *Fetcher) Config() Config { return f.cfg }

// dialContext connects through the guard. The Control function runs for
// every address the dialer tries, after resolution.
func (f *Fetcher) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, &blockedError{reason: "bad destination"}
	}
	d := net.Dialer{
		Timeout:   f.cfg.ConnectTimeout,
		KeepAlive: 30 * time.Second,
		Control:   f.policy.controlFunc(f.policy.trusted(host, port)),
	}
	return d.DialContext(ctx, network, addr)
}

// errTooManyRedirects is the cause CheckRedirect gives when a chain is too
// long; the http.Client wraps it in *url.Error.
var errTooManyRedirects = errors.New("too many redirects")

func (f *Fetcher) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > f.cfg.MaxRedirects {
		return fmt.Errorf("%w (at most %d)", errTooManyRedirects, max(0, f.cfg.MaxRedirects))
	}
	if _, err := f.checkURL(req.URL); err != nil {
		// The caller's URL was fine; the image host sent us somewhere we
		// will not go.
		re := *err.(*protocol.Error)
		re.Code = protocol.CodeUnprocessable
		re.Message = strings.Replace(re.Message, "image_url: ", "image_url: redirected to a forbidden location: ", 1)
		return &re
	}
	return nil
}

// Image is a decoded image and what is known about its encoding.
type Image struct {
	Decoded
	// URL is where the bytes came from after redirects, or "data:" for a
	// data: URL.
	URL string
}

// Fetch gets the image at rawURL (http, https, data: or obj://) and decodes it
// under the Fetcher's decode Budget. The caller must call Release on the
// image once done with it (defer img.Release()); until then the image holds
// its Cost of the budget.
func (f *Fetcher) Fetch(ctx context.Context, rawURL string) (*Image, error) {
	data, final, err := f.Get(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	wait := f.cfg.DecodeWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	d, err := decode(ctx, data, f.cfg.MaxPixels, f.cfg.MaxDecodeBytes, f.cfg.Budget, wait)
	if err != nil {
		var re *protocol.Error
		if errors.As(err, &re) {
			c := *re
			c.Message = "image_url: " + c.Message
			return nil, &c
		}
		return nil, err
	}
	return &Image{Decoded: *d, URL: final}, nil
}

// Get returns the bytes at rawURL and the final URL after redirects,
// without decoding them. The bytes are capped at Config.MaxBytes.
func (f *Fetcher) Get(ctx context.Context, rawURL string) (data []byte, finalURL string, err error) {
	if len(rawURL) >= 5 && strings.EqualFold(rawURL[:5], "data:") {
		if f.cfg.NoDataURLs {
			return nil, "", fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: data: URLs are not accepted by this runner", nil)
		}
		data, err := parseDataURL(rawURL, f.cfg.MaxBytes)
		return data, "data:", err
	}
	if objref.Is(rawURL) {
		return f.getObject(ctx, rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: not a valid URL", err)
	}
	if _, err := f.checkURL(u); err != nil {
		return nil, "", err
	}

	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: not a valid URL", err)
	}
	req.Header.Set("User-Agent", f.cfg.UserAgent)
	req.Header.Set("Accept", "image/*")
	start := time.Now()
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, "", f.classify(ctx, err, start)
	}
	defer resp.Body.Close()
	final := resp.Request.URL.Redacted()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fail(protocol.CodeUnprocessable, ErrHTTPStatus,
			fmt.Sprintf("image_url: the image host answered %s", statusText(resp.StatusCode)), nil)
	}
	if resp.ContentLength > f.cfg.MaxBytes {
		return nil, "", fail(protocol.CodeTooLarge, ErrTooLarge,
			fmt.Sprintf("image_url: the image is %d bytes, over the limit of %d", resp.ContentLength, f.cfg.MaxBytes), nil)
	}
	data, err = io.ReadAll(io.LimitReader(resp.Body, f.cfg.MaxBytes+1))
	if err != nil {
		return nil, "", f.classify(ctx, err, start)
	}
	if int64(len(data)) > f.cfg.MaxBytes {
		return nil, "", fail(protocol.CodeTooLarge, ErrTooLarge,
			fmt.Sprintf("image_url: the image is over the limit of %d bytes", f.cfg.MaxBytes), nil)
	}
	zerolog.Ctx(ctx).Debug().Str("url", final).Int("bytes", len(data)).
		Dur("fetch_time", time.Since(start)).Msg("image fetched")
	return data, final, nil
}

// getObject reads an obj:// reference through Config.Objects.
func (f *Fetcher) getObject(ctx context.Context, rawURL string) ([]byte, string, error) {
	if f.cfg.Objects == nil {
		return nil, "", fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: this runner does not read obj:// references", nil)
	}
	ref, err := objref.Parse(rawURL)
	if err != nil {
		return nil, "", fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: "+strings.TrimPrefix(err.Error(), "invalid object reference: ")+" (want obj://<bucket>/<name>)", err)
	}
	allowed := false
	for _, b := range f.cfg.Buckets {
		allowed = allowed || b == ref.Bucket
	}
	if !allowed {
		return nil, "", fail(protocol.CodeUnprocessable, ErrBlocked, fmt.Sprintf("image_url: bucket %q may not be read by this runner", ref.Bucket), nil)
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	start := time.Now()
	data, err := objref.Read(ctx, f.cfg.Objects, ref, f.cfg.MaxBytes)
	var se *objref.SizeError
	switch {
	case err == nil:
	case errors.As(err, &se) && se.Size >= 0:
		return nil, "", fail(protocol.CodeTooLarge, ErrTooLarge, fmt.Sprintf("image_url: the object is %d bytes, over the limit of %d", se.Size, f.cfg.MaxBytes), err)
	case errors.Is(err, objref.ErrTooLarge):
		return nil, "", fail(protocol.CodeTooLarge, ErrTooLarge, fmt.Sprintf("image_url: the object is over the limit of %d bytes", f.cfg.MaxBytes), err)
	case errors.Is(err, objref.ErrNotFound):
		return nil, "", fail(protocol.CodeUnprocessable, ErrUnreachable, fmt.Sprintf("image_url: no object %q in bucket %q", ref.Name, ref.Bucket), err)
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return nil, "", fail(protocol.CodeDeadline, ErrTimeout, fmt.Sprintf("image_url: timed out after %s reading the object", time.Since(start).Round(time.Millisecond)), err)
	default:
		return nil, "", fail(protocol.CodeUnprocessable, ErrUnreachable, "image_url: the object could not be read", err)
	}
	zerolog.Ctx(ctx).Debug().Str("url", rawURL).Int("bytes", len(data)).
		Dur("fetch_time", time.Since(start)).Msg("object read")
	return data, ref.String(), nil
}

// checkURL validates a URL before it is requested, first or after a
// redirect. It returns the host:port to be dialled.
func (f *Fetcher) checkURL(u *url.URL) (string, error) {
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	case "":
		return "", fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: not an absolute URL; use http, https, data: or obj://", nil)
	default:
		return "", fail(protocol.CodeInvalidInput, ErrInvalidURL,
			fmt.Sprintf("image_url: scheme %q is not supported; use http, https, data: or obj://", u.Scheme), nil)
	}
	if u.User != nil {
		return "", fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: URLs with credentials are not accepted", nil)
	}
	host := u.Hostname()
	if host == "" {
		return "", fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: the URL has no host", nil)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if strings.EqualFold(u.Scheme, "https") {
			port = "443"
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fail(protocol.CodeInvalidInput, ErrInvalidURL, fmt.Sprintf("image_url: bad port %q", port), nil)
	}
	if err := f.policy.checkLiteral(host, port); err != nil {
		return "", fail(protocol.CodeUnprocessable, ErrBlocked, "image_url: blocked address: "+err.Error(), err)
	}
	return net.JoinHostPort(host, port), nil
}

// classify turns a transport error into the caller's *protocol.Error.
func (f *Fetcher) classify(ctx context.Context, err error, start time.Time) error {
	var re *protocol.Error
	if errors.As(err, &re) {
		return re // from checkRedirect: already classified
	}
	var be *blockedError
	if errors.As(err, &be) {
		return fail(protocol.CodeUnprocessable, ErrBlocked, "image_url: blocked address: "+be.reason, err)
	}
	if errors.Is(err, errTooManyRedirects) {
		return fail(protocol.CodeUnprocessable, ErrUnreachable,
			fmt.Sprintf("image_url: more than %d redirects", max(0, f.cfg.MaxRedirects)), err)
	}
	var ne net.Error
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fail(protocol.CodeDeadline, ErrTimeout,
			fmt.Sprintf("image_url: timed out after %s", time.Since(start).Round(time.Millisecond)), err)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fail(protocol.CodeUnprocessable, ErrUnreachable, "image_url: cannot resolve the host name", err)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return fail(protocol.CodeUnprocessable, ErrUnreachable, "image_url: cannot connect to the image host", err)
	}
	if strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:") {
		return fail(protocol.CodeUnprocessable, ErrUnreachable, "image_url: TLS handshake with the image host failed", err)
	}
	return fail(protocol.CodeUnprocessable, ErrUnreachable, "image_url: the image host did not deliver the image", err)
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return strconv.Itoa(code) + " " + t
	}
	return strconv.Itoa(code)
}

// fail builds the *protocol.Error every failure of this package is: code and
// message for the caller, kind and cause for errors.Is and the log.
func fail(code int, kind error, msg string, cause error) *protocol.Error {
	err := kind
	if cause != nil {
		err = fmt.Errorf("%w: %w", kind, cause)
	}
	return &protocol.Error{Code: code, Message: msg, Err: err}
}
