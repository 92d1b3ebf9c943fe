package gateway

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/protocol"
)

// Defences of the gateway against the web pages its users visit and
// against what answers on run.<algorithm> (docs/HTTP.md, "Security").

// loopbackHost reports whether the Host header host (with or without a
// port) names this machine only: localhost, a name under .localhost, or a
// loopback address. A DNS name an attacker controls never does, so a page
// that rebinds its name to 127.0.0.1 is refused. No Host at all (HTTP/1.0,
// an in-process call) is not a browser's request and passes.
func loopbackHost(host string) bool {
	if host == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	return Loopback(host) || strings.HasSuffix(host, ".localhost")
}

// sameOrigin reports whether origin (an Origin header) is the gateway's
// own as the request reached it: http or https and the request's Host.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Path != "" || u.User != nil {
		return false
	}
	return strings.EqualFold(u.Host, host)
}

// simpleContentType reports whether a browser may send a POST with
// content type ct to another site without asking first (a CORS preflight):
// an HTML form or a no-cors fetch can. A missing type is one of them.
func simpleContentType(ct string) (mediaType string, simple bool) {
	if ct == "" {
		return "", true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct, true
	}
	switch mt {
	case "text/plain", "application/x-www-form-urlencoded", "multipart/form-data":
		return mt, true
	}
	return mt, false
}

// jsonType reports whether media type mt is JSON.
func jsonType(mt string) bool { return mt == "application/json" || strings.HasSuffix(mt, "+json") }

// guard refuses, before any route, what a web page the user visits could
// make a browser send: a Host that is not loopback on a gateway without a
// token (DNS rebinding), an Origin other than the gateway's own or the
// configured CORS origin, and a POST whose body a cross-site form could
// have sent (text/plain, form-urlencoded), except the multipart forms of
// run and jobs (see checkContentType).
func (g *Gateway) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.cfg.Token == "" && !loopbackHost(r.Host) {
			writeProblem(w, problem{Code: http.StatusForbidden, Message: fmt.Sprintf(
				"host %q is not a loopback name or address: a gateway without a bearer token answers only to localhost, 127.0.0.1 and [::1]", truncate(r.Host, 256))})
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) && (g.cfg.CORSOrigin == "" || o != g.cfg.CORSOrigin) {
			writeProblem(w, problem{Code: http.StatusForbidden, Message: fmt.Sprintf(
				"origin %q is not this gateway's: only its own pages (and the one CORS origin configured) may call it", truncate(o, 256))})
			return
		}
		if r.Method == http.MethodPost && !g.checkContentType(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkContentType accepts a POST whose content type forces a browser to
// ask first before sending it from another site (application/json for the
// JSON routes; any type but the three a form can send for an upload), a
// multipart/form-data run or job (browsers always send Origin with such a
// form, which guard checks), and a POST without a body or type (replay).
// Otherwise it writes a 415 and returns false.
func (g *Gateway) checkContentType(w http.ResponseWriter, r *http.Request) bool {
	mt, simple := simpleContentType(r.Header.Get("Content-Type"))
	if mt == "" && r.ContentLength == 0 {
		return true
	}
	p := r.URL.Path
	upload := p == "/v1/objects"
	form := strings.HasPrefix(p, "/v1/algorithms/") && (strings.HasSuffix(p, "/run") || strings.HasSuffix(p, "/jobs"))
	switch {
	case upload && !simple:
		return true
	case form && mt == "multipart/form-data":
		return true
	case !upload && jsonType(mt):
		return true
	}
	want := "Content-Type: application/json"
	switch {
	case upload:
		want = "a Content-Type other than text/plain, application/x-www-form-urlencoded and multipart/form-data, such as application/octet-stream"
	case form:
		want += " (or multipart/form-data with a file)"
	}
	if mt == "" {
		mt = "none"
	}
	writeProblem(w, problem{Code: http.StatusUnsupportedMediaType, Message: fmt.Sprintf(
		"content type %s refused: want %s (a type a web page cannot send to this gateway without asking)", truncate(mt, 128), want)})
	return false
}

// replyHeaders are the reply headers of run.<algorithm> passed on to the
// HTTP caller (docs/PROTOCOL.md, "Reply"); the gateway sets Pnp-Input-Ref
// itself.
var replyHeaders = []string{protocol.HeaderInstance, protocol.HeaderAlgorithm, protocol.HeaderVersion, protocol.HeaderNotStarted, protocol.HeaderOutputRef}

// maxReplyHeader bounds a reply header value passed on.
const maxReplyHeader = 256

// passReplyHeaders copies the documented headers of a runner's reply,
// each bounded and only when it is a valid HTTP header value.
func passReplyHeaders(w http.ResponseWriter, reply *nats.Msg) {
	if len(reply.Header) == 0 {
		return
	}
	h := w.Header()
	// One backing array for the values passed on: a reply carries
	// three or four of them.
	var vals []string
	for _, k := range replyHeaders {
		v := reply.Header.Get(k)
		if v == "" || len(v) > maxReplyHeader || !validHeaderValue(v) {
			continue
		}
		if vals == nil {
			vals = make([]string, 0, len(replyHeaders))
		}
		vals = append(vals, v)
		h[textproto.CanonicalMIMEHeaderKey(k)] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
}

// validHeaderValue reports whether v holds no control characters (a
// header value HTTP can carry as it is).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// errUploadStalled ends an upload that arrives slower than the minimum
// rate.
var errUploadStalled = errors.New("upload stalled")

// stallGuard is a request body that must keep arriving: each read moves
// the connection's read deadline to start + uploadGrace + read/minRate,
// never past start + transferTimeout, so a client that stops sending (or
// trickles) is cut off early instead of holding a slot for 10 minutes.
type stallGuard struct {
	r       io.ReadCloser
	rc      *http.ResponseController
	start   time.Time
	n       int64
	minRate int64
	set     time.Time
}

// uploadGrace is the time an upload gets before the minimum rate counts.
const uploadGrace = 10 * time.Second

// guardUpload wraps r's body in a stallGuard and sets its first deadline.
// A caller that goes on after the body is read (a multipart run waiting
// for its reply) calls the returned func to give the connection back the
// transfer's deadline: the server's background read would otherwise end
// the request's context at the guard's deadline. A failed upload must not
// call it: the server then reads what is left of the body under the
// guard's deadline, not for 10 minutes.
func (g *Gateway) guardUpload(w http.ResponseWriter, r *http.Request) (uploaded func()) {
	s := &stallGuard{r: r.Body, rc: http.NewResponseController(w), start: time.Now(), minRate: g.cfg.UploadMinRate}
	s.extend()
	r.Body = s
	return func() { _ = s.rc.SetReadDeadline(s.start.Add(transferTimeout)) }
}

func (s *stallGuard) deadline() time.Time {
	d := uploadGrace + time.Duration(float64(s.n)/float64(s.minRate)*float64(time.Second))
	return s.start.Add(min(d, transferTimeout))
}

func (s *stallGuard) extend() {
	d := s.deadline()
	// Moving the deadline costs a timer update: at most once per 100 ms
	// of progress.
	if d.Sub(s.set) >= 100*time.Millisecond {
		_ = s.rc.SetReadDeadline(d)
		s.set = d
	}
}

func (s *stallGuard) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return n, fmt.Errorf("%w: under %d bytes/s after %s (%d bytes arrived)", errUploadStalled, s.minRate, uploadGrace, s.n)
	}
	if err == io.EOF {
		// All arrived: what the handler does next (store the last
		// chunk, wait for a run) is not the client's pace.
		_ = s.rc.SetReadDeadline(s.start.Add(transferTimeout))
	} else if n > 0 {
		s.extend()
	}
	return n, err
}

func (s *stallGuard) Close() error { return s.r.Close() }

// stalledProblem is the answer to an upload cut off by its stallGuard.
func (g *Gateway) stalledProblem(alg string) problem {
	return problem{Code: http.StatusRequestTimeout, Algorithm: alg, Message: fmt.Sprintf(
		"upload too slow: it must arrive at %d bytes/s or more after the first %s", g.cfg.UploadMinRate, uploadGrace)}
}

// slots is a counting semaphore that refuses instead of waiting.
type slots chan struct{}

func (s slots) acquire() bool {
	select {
	case s <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s slots) release() { <-s }

// admitUpload takes an upload slot, or writes a 503 naming the limit.
func (g *Gateway) admitUpload(w http.ResponseWriter, alg string) (release func(), ok bool) {
	if !g.uploads.acquire() {
		w.Header().Set("Retry-After", "5")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Algorithm: alg, Message: fmt.Sprintf(
			"too many uploads at once: the limit of %d (--http-max-uploads) is reached; retry later", cap(g.uploads))})
		return nil, false
	}
	return g.uploads.release, true
}

// admitEvents takes an event stream slot, or writes a 503 naming the
// limit.
func (g *Gateway) admitEvents(w http.ResponseWriter) (release func(), ok bool) {
	if !g.streams.acquire() {
		w.Header().Set("Retry-After", strconv.Itoa(5))
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: fmt.Sprintf(
			"too many event streams: the limit of %d (--http-max-event-streams) is reached; retry later", cap(g.streams))})
		return nil, false
	}
	return g.streams.release, true
}
