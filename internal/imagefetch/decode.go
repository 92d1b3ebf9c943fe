package imagefetch

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"strings"
	"time"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
	"golang.org/x/image/webp"

	"github.com/pnpworker/pnpworker/protocol"
)

// Decoded is an image decoded from bytes.
type Decoded struct {
	// Image is the first frame, as decoded.
	Image image.Image
	// Format is one of Formats.
	Format string
	// Width and Height are in pixels.
	Width, Height int
	// Bytes is the size of the encoded image.
	Bytes int
	// Cost is what decoding may allocate, computed from the header before
	// decoding: an upper bound of the bytes the decoder allocated, the
	// image included. It is what the image holds of a decode Budget.
	Cost int64

	res *reservation // its share of a Budget; nil without one
}

// Release says the image is no longer used (call it, typically deferred,
// right after Fetch): its share of the decode budget returns as soon as the
// garbage collector has reclaimed the pixels, which the budget asks for
// when another picture waits. It is safe to call more than once, on
// copies, and on a Decoded that holds no budget.
func (d *Decoded) Release() {
	if d.res != nil {
		d.res.release()
	}
}

// codec decodes one format. Formats are chosen explicitly from the bytes
// rather than through image.Decode's global registry, so only these are
// ever attempted, whatever else the binary links.
type codec struct {
	name   string
	magic  func([]byte) bool
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

var codecs = [...]codec{
	{"png", prefix("\x89PNG\r\n\x1a\n"), png.DecodeConfig, png.Decode},
	{"jpeg", prefix("\xff\xd8\xff"), jpeg.DecodeConfig, jpeg.Decode},
	{"gif", func(b []byte) bool { return prefix("GIF87a")(b) || prefix("GIF89a")(b) }, gif.DecodeConfig, gif.Decode},
	{"webp", func(b []byte) bool { return len(b) >= 15 && string(b[:4]) == "RIFF" && string(b[8:15]) == "WEBPVP8" }, webp.DecodeConfig, webp.Decode},
	{"bmp", prefix("BM"), bmp.DecodeConfig, bmp.Decode},
	{"tiff", func(b []byte) bool { return prefix("II*\x00")(b) || prefix("MM\x00*")(b) }, tiff.DecodeConfig, tiff.Decode},
}

func prefix(p string) func([]byte) bool {
	return func(b []byte) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }
}

// Formats lists the image formats Decode accepts.
func Formats() []string {
	out := make([]string, len(codecs))
	for i, c := range codecs {
		out[i] = c.name
	}
	return out
}

// Decode identifies the format of data from its first bytes, reads the
// header and refuses images over maxPixels (width×height), or whose
// decoding would allocate more than DefaultMaxDecodeBytes, before decoding
// anything, then decodes the first frame. maxPixels ≤ 0 means
// DefaultMaxPixels. Errors are *protocol.Error: 422 ErrNotImage or 413
// ErrTooLarge, with messages that do not say where the bytes came from.
//
// What decoding allocates is computed from the header: width × height ×
// the bytes per pixel of the image the decoder produces for the format,
// bit depth and colour type (1 for paletted and 8-bit grey, 2 for 16-bit
// grey, 4 for 8-bit RGBA and CMYK, 8 for 16-bit RGBA, 1.5 to 3 for JPEG
// YCbCr by subsampling), plus what the decoder allocates beside it
// (interlace passes, progressive JPEG coefficients, colour conversions,
// decompression buffers). Decoded.Cost reports it.
//
// Decode uses no Budget; a Fetcher does.
func Decode(data []byte, maxPixels int64) (*Decoded, error) {
	return decode(context.Background(), data, maxPixels, DefaultMaxDecodeBytes, nil, 0)
}

// decode is Decode under a per-image byte limit and, when budget is not
// nil, a reservation from budget, waiting up to wait for room.
func decode(ctx context.Context, data []byte, maxPixels, maxCost int64, budget *Budget, wait time.Duration) (*Decoded, error) {
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	var c *codec
	for i := range codecs {
		if codecs[i].magic(data) {
			c = &codecs[i]
			break
		}
	}
	if c == nil {
		what := http.DetectContentType(data)
		if len(data) == 0 {
			what = "empty"
		}
		return nil, fail(protocol.CodeUnprocessable, ErrNotImage, fmt.Sprintf(
			"not an image in a supported format (%s); the content looks like %s",
			strings.Join(Formats(), ", "), what), nil)
	}
	cfg, err := c.config(bytes.NewReader(data))
	if err != nil {
		return nil, fail(protocol.CodeUnprocessable, ErrNotImage, fmt.Sprintf("unreadable %s header", c.name), err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fail(protocol.CodeUnprocessable, ErrNotImage, fmt.Sprintf("%s image has no pixels (%d×%d)", c.name, cfg.Width, cfg.Height), nil)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > maxPixels {
		return nil, fail(protocol.CodeTooLarge, ErrTooLarge, fmt.Sprintf(
			"the image is %d×%d pixels (%d), over the limit of %d", cfg.Width, cfg.Height, px, maxPixels), nil)
	}
	cost := decodeCost(c.name, data, cfg)
	if budget != nil {
		maxCost = min(maxCost, budget.Size())
	}
	if cost > maxCost {
		return nil, fail(protocol.CodeTooLarge, ErrTooLarge, fmt.Sprintf(
			"decoding the %d×%d %s image takes up to %d bytes of memory, over the limit of %d", cfg.Width, cfg.Height, c.name, cost, maxCost), nil)
	}
	var res *reservation
	if budget != nil {
		var err error
		if res, err = budget.acquire(ctx, cost, wait); err != nil {
			if ctx.Err() != nil {
				e := fail(protocol.CodeDeadline, ErrTimeout, "timed out waiting for memory to decode the image", err)
				e.NotStarted = true
				return nil, e
			}
			e := fail(protocol.CodeUnavailable, ErrBusy, fmt.Sprintf(
				"busy: decoding the %d×%d %s image takes up to %d bytes and other images hold the decode budget of %d; try again later",
				cfg.Width, cfg.Height, c.name, cost, budget.Size()), err)
			e.NotStarted = true
			return nil, e
		}
	}
	img, err := c.decode(bytes.NewReader(data))
	if err == nil && img.Bounds().Empty() {
		err = errNoPixels
	}
	if err != nil {
		if res != nil {
			res.abandon()
		}
		if err == errNoPixels {
			return nil, fail(protocol.CodeUnprocessable, ErrNotImage, fmt.Sprintf("%s image has no pixels", c.name), nil)
		}
		return nil, fail(protocol.CodeUnprocessable, ErrNotImage, fmt.Sprintf("corrupt %s image", c.name), err)
	}
	if res != nil {
		if p := pixels(img); p != nil {
			track(res, p)
		} else {
			// An image type without a known pixel buffer: the next
			// collection after release ends the reservation.
			track(res, new(gcSentinel))
		}
	}
	return &Decoded{Image: img, Format: c.name, Width: cfg.Width, Height: cfg.Height, Bytes: len(data), Cost: cost, res: res}, nil
}

var errNoPixels = errors.New("no pixels")

// pixels returns a pointer into the pixel buffer of the image types the
// decoders produce: the allocation that holds nearly all of a decoded
// image's bytes, and that is collected once nothing (the image, a
// sub-image) refers to it.
func pixels(img image.Image) *byte {
	var p []byte
	switch m := img.(type) {
	case *image.Gray:
		p = m.Pix
	case *image.Gray16:
		p = m.Pix
	case *image.RGBA:
		p = m.Pix
	case *image.RGBA64:
		p = m.Pix
	case *image.NRGBA:
		p = m.Pix
	case *image.NRGBA64:
		p = m.Pix
	case *image.CMYK:
		p = m.Pix
	case *image.Paletted:
		p = m.Pix
	case *image.YCbCr:
		p = m.Y
	case *image.NYCbCrA:
		p = m.Y
	}
	if len(p) == 0 {
		return nil
	}
	return &p[0]
}

// parseDataURL decodes "data:[<mediatype>][;base64],<data>". Only base64
// payloads are accepted: images are binary. The media type is ignored;
// Decode sniffs the bytes.
func parseDataURL(s string, maxBytes int64) ([]byte, error) {
	comma := strings.IndexByte(s, ',')
	if comma < 0 {
		return nil, fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: data: URL without a comma", nil)
	}
	meta := strings.ToLower(s[len("data:"):comma])
	if !strings.HasSuffix(meta, ";base64") {
		return nil, fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: data: URLs must be base64 (data:image/png;base64,...)", nil)
	}
	payload := s[comma+1:]
	if int64(base64.StdEncoding.DecodedLen(len(payload))) > maxBytes+3 {
		return nil, fail(protocol.CodeTooLarge, ErrTooLarge, fmt.Sprintf("image_url: the data: URL holds more than %d bytes", maxBytes), nil)
	}
	// Tolerate what clients commonly send: missing padding, URL-safe
	// alphabet, line breaks.
	payload = strings.NewReplacer("\n", "", "\r", "", " ", "", "%2B", "+", "%2F", "/", "%3D", "=").Replace(payload)
	payload = strings.TrimRight(payload, "=")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(payload, "-_") {
		enc = base64.RawURLEncoding
	}
	data, err := enc.DecodeString(payload)
	if err != nil {
		return nil, fail(protocol.CodeInvalidInput, ErrInvalidURL, "image_url: the data: URL is not valid base64", err)
	}
	if int64(len(data)) > maxBytes {
		return nil, fail(protocol.CodeTooLarge, ErrTooLarge, fmt.Sprintf("image_url: the data: URL holds more than %d bytes", maxBytes), nil)
	}
	return data, nil
}
