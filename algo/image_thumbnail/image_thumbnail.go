// Package imagethumbnail is the image_thumbnail algorithm: the image at a
// URL scaled down to fit a square, returned as a base64 PNG.
//
// Its output is an image, so it is often larger than a NATS message; the
// runner then stores it in the object store's outputs bucket and the job's
// result carries output_ref instead (docs/PROTOCOL.md, "Data by
// reference"). It shares the image fetcher, with its limits and error
// codes, with the other image algorithms.
package imagethumbnail

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/png"
	"time"

	"golang.org/x/image/draw"

	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/schemas"
)

// Name is the algorithm's name; it is served on run.image_thumbnail.
const Name = "image_thumbnail"

// Defaults of Config's zero values and the limits of Input.MaxSide.
const (
	DefaultMaxSide = 256
	MaxSide        = 4096
	DefaultTimeout = 20 * time.Second
)

// Config configures image_thumbnail. The zero value fetches from public
// addresses only.
type Config struct {
	// Fetcher fetches image_url. Default: a fetcher with
	// imagefetch.Config's defaults.
	Fetcher *imagefetch.Fetcher
	// Timeout is the time budget per request, fetch included. Default
	// DefaultTimeout.
	Timeout time.Duration
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	if c.Timeout < 0 {
		return fmt.Errorf("timeout %s is negative", c.Timeout)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

// Input is the request body (schemas/image_thumbnail.input.json). The tags
// of Input and Output carry the files' bounds, so that the schemas
// runner.SchemaFor derives accept and refuse what the files do (a test
// holds them together).
type Input struct {
	// ImageURL is an http, https, data: or obj:// URL of the image.
	ImageURL string `json:"image_url" jsonschema:"format=uri,minLength=1,maxLength=16777216"`
	// MaxSide bounds the thumbnail's width and height, 1..4096. Default
	// 256. An image that already fits is not enlarged.
	MaxSide int `json:"max_side,omitempty" jsonschema:"minimum=1,maximum=4096,default=256"`
}

// Output is the reply body (schemas/image_thumbnail.output.json).
type Output struct {
	Width  int    `json:"width" jsonschema:"minimum=1"`
	Height int    `json:"height" jsonschema:"minimum=1"`
	Format string `json:"format" jsonschema:"enum=png"`
	// PNGBase64 is the thumbnail, a PNG in standard base64.
	PNGBase64 string `json:"png_base64"`
}

// New returns the image_thumbnail algorithm.
func New(cfg Config) (*runner.Algorithm, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("image_thumbnail: %w", err)
	}
	cfg.setDefaults()
	if cfg.Fetcher == nil {
		f, err := imagefetch.New(imagefetch.Config{})
		if err != nil {
			return nil, fmt.Errorf("image_thumbnail: %w", err)
		}
		cfg.Fetcher = f
	}
	return runner.NewAlgorithm(runner.Spec{
		Name:         Name,
		Version:      "1.0.0",
		Description:  "The image scaled down to fit max_side×max_side, as a base64 PNG.",
		InputSchema:  schemas.Bytes("image_thumbnail.input.json"),
		OutputSchema: schemas.Bytes("image_thumbnail.output.json"),
		Timeout:      cfg.Timeout,
	}, func(ctx context.Context, in Input) (Output, error) {
		img, err := cfg.Fetcher.Fetch(ctx, in.ImageURL)
		if err != nil {
			return Output{}, err
		}
		defer img.Release() // the decoded pixels' share of the decode budget
		if err := ctx.Err(); err != nil {
			return Output{}, err
		}
		return Thumbnail(img.Image, in.MaxSide)
	})
}

// Thumbnail scales img to fit maxSide×maxSide, keeping its aspect ratio
// and never enlarging it, and encodes it as PNG. maxSide ≤ 0 means
// DefaultMaxSide.
func Thumbnail(img image.Image, maxSide int) (Output, error) {
	if maxSide <= 0 {
		maxSide = DefaultMaxSide
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w > maxSide || h > maxSide {
		if w >= h {
			w, h = maxSide, max(1, h*maxSide/w)
		} else {
			w, h = max(1, w*maxSide/h), maxSide
		}
	}
	var out image.Image = img
	if w != b.Dx() || h != b.Dy() {
		dst := image.NewNRGBA(image.Rect(0, 0, w, h))
		draw.ApproxBiLinear.Scale(dst, dst.Bounds(), img, b, draw.Src, nil)
		out = dst
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, out); err != nil {
		return Output{}, fmt.Errorf("image_thumbnail: encode png: %w", err)
	}
	return Output{Width: w, Height: h, Format: "png", PNGBase64: base64.StdEncoding.EncodeToString(buf.Bytes())}, nil
}
