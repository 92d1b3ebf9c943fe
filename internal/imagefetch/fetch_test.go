package imagefetch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/protocol"
)

// pngBytes is a small valid PNG.
func pngBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bombPNG is a PNG whose header claims w×h pixels, with no pixel data: a
// decoder that trusted it would allocate w×h×4 bytes.
func bombPNG(w, h uint32) []byte {
	var buf bytes.Buffer
	buf.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		_ = binary.Write(&buf, binary.BigEndian, uint32(len(data)))
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		buf.WriteString(typ)
		buf.Write(data)
		_ = binary.Write(&buf, binary.BigEndian, crc.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return buf.Bytes()
}

// server is an httptest server on 127.0.0.1 with a few fixed routes.
func server(t *testing.T, routes map[string]http.HandlerFunc) (base, hostPort string) {
	t.Helper()
	mux := http.NewServeMux()
	for p, h := range routes {
		mux.HandleFunc(p, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, strings.TrimPrefix(srv.URL, "http://")
}

func TestFetchSafety(t *testing.T) {
	img := pngBytes(t, 8, 6)
	// release unblocks the slow handlers; it is closed before the server
	// closes (cleanups run last-registered first), so Close does not wait
	// on them.
	release := make(chan struct{})
	blocked, _ := server(t, map[string]http.HandlerFunc{
		"/img.png": func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(img) },
	})
	base, allowed := server(t, map[string]http.HandlerFunc{
		"/img.png": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain") // a lying header: the bytes decide
			_, _ = w.Write(img)
		},
		"/to-blocked": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, blocked+"/img.png", http.StatusFound)
		},
		"/to-metadata": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		},
		"/to-file": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
		},
		"/to-self": func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/img.png", http.StatusFound) },
		"/loop":    func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) },
		"/big": func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(bytes.Repeat([]byte{0xff}, 4096)) // Content-Length known up front
		},
		"/big-stream": func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < 8; i++ { // chunked: the cap must stop the read
				_, _ = w.Write(bytes.Repeat([]byte{0xff}, 512))
				w.(http.Flusher).Flush()
			}
		},
		"/slow": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		},
		"/slow-body": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			_, _ = w.Write(img[:16])
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		},
		"/html": func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("<!doctype html><html><body>hi</body></html>"))
		},
		"/bomb.png":  func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(bombPNG(100000, 100000)) },
		"/truncated": func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(img[:len(img)/2]) },
		"/missing":   http.NotFound,
	})
	t.Cleanup(func() { close(release) })

	// A port nobody listens on, for "unreachable".
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	f, err := New(Config{
		Allow:    []string{allowed, closed},
		MaxBytes: 2048,
		Timeout:  300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, blockedPort, _ := net.SplitHostPort(strings.TrimPrefix(blocked, "http://"))

	dataURL := "data:image/png;base64," + base64.StdEncoding.EncodeToString(img)
	cases := []struct {
		name string
		url  string
		code int   // 0: success
		kind error // sentinel the error must match
		msg  string
	}{
		{"allowlisted host:port, lying Content-Type", base + "/img.png", 0, nil, ""},
		{"redirect within the allowed host", base + "/to-self", 0, nil, ""},
		{"data URL", dataURL, 0, nil, ""},
		{"data URL, URL-safe base64 without padding", "data:image/png;base64," + base64.RawURLEncoding.EncodeToString(img), 0, nil, ""},

		{"loopback", blocked + "/img.png", 422, ErrBlocked, "loopback"},
		{"loopback by name", "http://localhost:" + blockedPort + "/img.png", 422, ErrBlocked, "loopback"},
		{"IPv6 loopback", "http://[::1]:" + blockedPort + "/img.png", 422, ErrBlocked, "loopback"},
		{"cloud metadata", "http://169.254.169.254/latest/meta-data/", 422, ErrBlocked, "link-local"},
		{"IPv6 metadata", "http://[fd00:ec2::254]/", 422, ErrBlocked, "metadata"},
		{"IPv4-mapped IPv6 loopback", "http://[::ffff:127.0.0.1]:" + blockedPort + "/img.png", 422, ErrBlocked, "IPv4-mapped"},
		{"IPv4-mapped IPv6 metadata", "http://[::ffff:a9fe:a9fe]/", 422, ErrBlocked, "IPv4-mapped"},
		{"private", "http://10.1.2.3/x.png", 422, ErrBlocked, "private"},
		{"unspecified", "http://0.0.0.0:" + blockedPort + "/", 422, ErrBlocked, "unspecified"},
		{"redirect from allowed host to blocked one", base + "/to-blocked", 422, ErrBlocked, "loopback"},
		{"redirect to metadata", base + "/to-metadata", 422, ErrBlocked, "link-local"},
		{"redirect to file:", base + "/to-file", 422, ErrInvalidURL, "redirected to a forbidden location"},
		{"redirect loop", base + "/loop", 422, ErrUnreachable, "redirects"},

		{"body over the cap (Content-Length)", base + "/big", 413, ErrTooLarge, "over the limit of 2048"},
		{"body over the cap (streamed)", base + "/big-stream", 413, ErrTooLarge, "over the limit of 2048"},
		{"data URL over the cap", "data:image/png;base64," + base64.StdEncoding.EncodeToString(make([]byte, 4096)), 413, ErrTooLarge, "more than 2048"},
		{"PNG claiming 100000×100000", base + "/bomb.png", 413, ErrTooLarge, "100000×100000"},

		{"slow server past the timeout", base + "/slow", 504, ErrTimeout, "timed out"},
		{"slow body past the timeout", base + "/slow-body", 504, ErrTimeout, "timed out"},

		{"not an image", base + "/html", 422, ErrNotImage, "text/html"},
		{"truncated image", base + "/truncated", 422, ErrNotImage, "corrupt png"},
		{"404", base + "/missing", 422, ErrHTTPStatus, "404 Not Found"},
		{"connection refused", "http://" + closed + "/x.png", 422, ErrUnreachable, "cannot connect"},

		{"file:", "file:///etc/passwd", 400, ErrInvalidURL, `scheme "file"`},
		{"ftp:", "ftp://example.com/x.png", 400, ErrInvalidURL, `scheme "ftp"`},
		{"relative", "/etc/passwd", 400, ErrInvalidURL, "not an absolute URL"},
		{"credentials", "http://user:pw@" + allowed + "/img.png", 400, ErrInvalidURL, "credentials"},
		{"data URL not base64", "data:image/png,hello", 400, ErrInvalidURL, "base64"},
		{"data URL bad base64", "data:image/png;base64,***", 400, ErrInvalidURL, "not valid base64"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img, err := f.Fetch(context.Background(), tc.url)
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if img.Format != "png" || img.Width != 8 || img.Height != 6 {
					t.Fatalf("got %s %d×%d, want png 8×6", img.Format, img.Width, img.Height)
				}
				return
			}
			var re *protocol.Error
			if !errors.As(err, &re) {
				t.Fatalf("error %v (%T) is not a *protocol.Error", err, err)
			}
			if re.Code != tc.code || !errors.Is(err, tc.kind) || !strings.Contains(re.Message, tc.msg) {
				t.Fatalf("got %d %q (cause %v), want %d %v containing %q", re.Code, re.Message, re.Err, tc.code, tc.kind, tc.msg)
			}
			if !strings.HasPrefix(re.Message, "image_url: ") {
				t.Errorf("message %q does not say which field failed", re.Message)
			}
		})
	}
}

// TestFetchCallerDeadline checks that the caller's context bounds the
// fetch even when the fetcher's own timeout is longer.
func TestFetchCallerDeadline(t *testing.T) {
	release := make(chan struct{})
	_, hp := server(t, map[string]http.HandlerFunc{"/slow": func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}})
	t.Cleanup(func() { close(release) })
	f, err := New(Config{Allow: []string{hp}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = f.Fetch(ctx, "http://"+hp+"/slow")
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, protocol.ErrDeadline) {
		t.Fatalf("got %v, want a 504 timeout", err)
	}
}

// TestFetchAllowCIDR opens all of loopback with a CIDR entry.
func TestFetchAllowCIDR(t *testing.T) {
	img := pngBytes(t, 3, 2)
	base, _ := server(t, map[string]http.HandlerFunc{"/i": func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(img) }})
	f, err := New(Config{Allow: []string{"127.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Fetch(context.Background(), base+"/i"); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyCheck(t *testing.T) {
	p, err := newPolicy([]string{"10.20.0.0/16", "fd12::/16", "images.internal:8080"}, DefaultPorts)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr    string
		trusted bool
		blocked string // "" when allowed
	}{
		{"93.184.216.34:443", false, ""},
		{"93.184.216.34:80", false, ""},
		{"[2606:2800:220:1:248:1893:25c8:1946]:443", false, ""},
		{"93.184.216.34:22", false, "port 22"},
		{"127.0.0.1:80", false, "loopback"},
		{"[::1]:80", false, "loopback"},
		{"10.0.0.1:80", false, "private"},
		{"10.20.3.4:5432", false, ""}, // allowlisted CIDR: any port
		{"172.16.0.1:80", false, "private"},
		{"192.168.1.1:80", false, "private"},
		{"100.64.0.1:80", false, "carrier-grade"},
		{"169.254.169.254:80", false, "link-local"},
		{"169.254.169.254:80", true, "link-local"}, // even when the host is allowlisted
		{"[fe80::1]:80", false, "link-local"},
		{"[fd00:ec2::254]:80", false, "metadata"},
		{"[fd12::5]:9000", false, ""},
		{"[fc00::1]:80", false, "private"},
		{"[64:ff9b::7f00:1]:80", false, "NAT64"},
		{"0.0.0.0:80", false, "unspecified"},
		{"255.255.255.255:80", false, "broadcast"},
		{"224.0.0.1:80", false, "multicast"},
		{"192.0.2.1:80", false, "special-purpose"},
		{"127.0.0.1:8080", true, ""}, // images.internal:8080 resolved to loopback
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			network := "tcp4"
			if strings.HasPrefix(tc.addr, "[") {
				network = "tcp6"
			}
			err := p.check(network, tc.addr, tc.trusted)
			if tc.blocked == "" && err != nil {
				t.Fatalf("blocked: %v", err)
			}
			if tc.blocked != "" && (err == nil || !strings.Contains(err.Error(), tc.blocked)) {
				t.Fatalf("got %v, want blocked for %q", err, tc.blocked)
			}
		})
	}
	if !p.trusted("Images.Internal.", "8080") || p.trusted("images.internal", "80") {
		t.Error("host:port allowlist matching is wrong")
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string // "" when valid
	}{
		{"zero", Config{}, ""},
		{"allowlist", Config{Allow: []string{"10.0.0.0/8", "192.168.1.5", "[::1]:9000", "img.local:8080"}}, ""},
		{"metadata CIDR", Config{Allow: []string{"169.254.169.254/32"}}, "cannot be allowed"},
		{"link-local host:port", Config{Allow: []string{"169.254.169.254:80"}}, "cannot be allowed"},
		{"garbage", Config{Allow: []string{"not an entry"}}, "want a CIDR"},
		{"bad port", Config{Allow: []string{"host:http"}}, "bad port"},
		{"negatives", Config{MaxBytes: -1, MaxPixels: -1, Timeout: -1, ConnectTimeout: -1}, "negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseAllow(t *testing.T) {
	got := ParseAllow(" 10.0.0.0/8, 127.0.0.1:9000\timg:80 ,,")
	want := []string{"10.0.0.0/8", "127.0.0.1:9000", "img:80"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("ParseAllow = %q, want %q", got, want)
	}
}

func TestDecodeFormats(t *testing.T) {
	src := image.NewNRGBA(image.Rect(0, 0, 5, 4))
	for i := range src.Pix {
		src.Pix[i] = 200
	}
	src.SetNRGBA(0, 0, color.NRGBA{255, 0, 0, 255})
	var pngBuf, gifBuf bytes.Buffer
	if err := png.Encode(&pngBuf, src); err != nil {
		t.Fatal(err)
	}
	if err := gif.Encode(&gifBuf, src, nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
		max  int64
		want string
		code int
	}{
		{"png", pngBuf.Bytes(), 0, "png", 0},
		{"gif", gifBuf.Bytes(), 0, "gif", 0},
		{"pixel budget", pngBuf.Bytes(), 19, "", 413},
		{"empty", nil, 0, "", 422},
		{"text", []byte("hello, world"), 0, "", 422},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Decode(tc.data, tc.max)
			if tc.code != 0 {
				var re *protocol.Error
				if !errors.As(err, &re) || re.Code != tc.code {
					t.Fatalf("got %v, want code %d", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Format != tc.want || d.Width != 5 || d.Height != 4 {
				t.Fatalf("got %s %d×%d", d.Format, d.Width, d.Height)
			}
		})
	}
}
