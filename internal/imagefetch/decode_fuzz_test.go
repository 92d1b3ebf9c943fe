package imagefetch

import (
	"bytes"
	"encoding/base64"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"testing"

	"github.com/pnpworker/pnpworker/protocol"
)

func fuzzImages(f *testing.F) [][]byte {
	f.Helper()
	src := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	src.SetNRGBA(1, 1, color.NRGBA{10, 20, 30, 255})
	var p, g, j bytes.Buffer
	if err := png.Encode(&p, src); err != nil {
		f.Fatal(err)
	}
	if err := gif.Encode(&g, src, nil); err != nil {
		f.Fatal(err)
	}
	if err := jpeg.Encode(&j, src, nil); err != nil {
		f.Fatal(err)
	}
	return [][]byte{
		p.Bytes(), g.Bytes(), j.Bytes(),
		bombPNG(1<<20, 1<<20), bombPNG(0, 5), bombPNG(300, 300),
		[]byte("BM"), []byte("II*\x00"), []byte("MM\x00*\x00\x00\x00\x08"),
		[]byte("RIFF\x00\x00\x00\x00WEBPVP8 "), []byte("GIF89a\xff\xff\xff\xff"),
		[]byte("\xff\xd8\xff"), nil, []byte("<svg/>"),
	}
}

// fuzzMaxPixels keeps each decode small: the point is the checks before and
// around decoding, not decoding large images.
const fuzzMaxPixels = 1 << 14

// FuzzDecode feeds arbitrary bytes, as fetched from any URL or data: URL,
// to Decode. It must never panic, must fail only with a 422 or 413
// *protocol.Error wrapping ErrNotImage or ErrTooLarge, and must never return
// an image over the pixel budget or one whose size disagrees with its
// header.
func FuzzDecode(f *testing.F) {
	for _, b := range fuzzImages(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Decode(data, fuzzMaxPixels)
		if err != nil {
			var re *protocol.Error
			if !errors.As(err, &re) {
				t.Fatalf("error %T is not a *protocol.Error: %v", err, err)
			}
			switch {
			case re.Code == protocol.CodeUnprocessable && errors.Is(err, ErrNotImage):
			case re.Code == protocol.CodeTooLarge && errors.Is(err, ErrTooLarge):
			default:
				t.Fatalf("unexpected error code %d: %v", re.Code, err)
			}
			return
		}
		if int64(d.Width)*int64(d.Height) > fuzzMaxPixels {
			t.Fatalf("decoded %d×%d, over the budget of %d", d.Width, d.Height, fuzzMaxPixels)
		}
		if d.Image == nil || d.Image.Bounds().Empty() {
			t.Fatal("success without pixels")
		}
		if b := d.Image.Bounds(); int64(b.Dx())*int64(b.Dy()) > fuzzMaxPixels {
			t.Fatalf("image bounds %v over the budget although the header said %d×%d", b, d.Width, d.Height)
		}
	})
}

// FuzzDataURL feeds arbitrary image_url values starting with "data:": the
// size limit holds before and after decoding, and errors are 400 or 413.
func FuzzDataURL(f *testing.F) {
	for _, b := range fuzzImages(f)[:3] {
		f.Add("data:image/png;base64,"+base64.StdEncoding.EncodeToString(b), int64(1<<10))
		f.Add("data:image/png;base64,"+base64.RawURLEncoding.EncodeToString(b), int64(10))
	}
	for _, s := range []string{"data:", "data:,", "data:;base64,", "data:image/png,abc", "data:;BASE64,%2B%2F%3D", "data:;base64,====", "data:;base64,a\nb\r c-_"} {
		f.Add(s, int64(8))
	}
	f.Fuzz(func(t *testing.T, s string, maxBytes int64) {
		if maxBytes < 0 || maxBytes > 1<<20 {
			maxBytes = 1 << 10
		}
		if len(s) < len("data:") || s[:5] != "data:" {
			s = "data:" + s
		}
		data, err := parseDataURL(s, maxBytes)
		if err != nil {
			var re *protocol.Error
			if !errors.As(err, &re) || (re.Code != protocol.CodeInvalidInput && re.Code != protocol.CodeTooLarge) {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		if int64(len(data)) > maxBytes {
			t.Fatalf("%d bytes returned, over the limit of %d", len(data), maxBytes)
		}
	})
}

// FuzzConfigAllow feeds arbitrary allowlists, as read from --fetch-allow or
// PNP_FETCH_ALLOW, to the configuration check: it must not panic, and a
// list it accepts must never open link-local (cloud metadata) addresses.
func FuzzConfigAllow(f *testing.F) {
	for _, s := range []string{"", "10.0.0.0/8", "127.0.0.1:9000", "[::1]:9000", "images.internal:8080",
		"169.254.169.254", "169.254.0.0/16", "fe80::/10", "0.0.0.0/0", "::/0", "224.0.0.1", "255.255.255.255",
		"a:b:c", "[::1", "1.2.3.4/33", "host:0", "host:65536", ":80", "10.0.0.0/8,169.254.169.254:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fe, err := New(Config{Allow: ParseAllow(s)})
		if err != nil {
			return
		}
		for _, addr := range []string{"169.254.169.254:80", "[fe80::1]:80", "0.0.0.0:80", "224.0.0.1:80"} {
			if err := fe.policy.check("tcp", addr, false); err == nil {
				t.Fatalf("allowlist %q opens %s", s, addr)
			}
			if err := fe.policy.check("tcp", addr, true); err == nil {
				t.Fatalf("allowlist %q opens %s to a trusted host", s, addr)
			}
		}
	})
}
