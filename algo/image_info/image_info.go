// Package imageinfo is the image_info algorithm: size, format, a
// perceptual hash and the dominant colours of the image at a URL.
//
// It shares the fetcher of meme_classifier (package internal/imagefetch),
// with the same SSRF guard, limits and error codes, and is served by the
// same runner: adding it took this package, two schema files and one line
// in cmd/pnp/builtin.go.
package imageinfo

import (
	"context"
	"fmt"
	"image"
	"math"
	"sort"
	"time"

	"github.com/corona10/goimagehash"

	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/schemas"
)

// Name is the algorithm's name; it is served on run.image_info.
const Name = "image_info"

// Defaults of Config's zero values and the limit of Input.MaxColors.
const (
	DefaultMaxColors = 5
	MaxColors        = 16
	DefaultTimeout   = 20 * time.Second
)

// Config configures image_info. The zero value fetches from public
// addresses only.
type Config struct {
	// Fetcher fetches image_url. Default: a fetcher with
	// imagefetch.Config's defaults. Share one between algorithms to share
	// its connection pool.
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

// Input is the request body (schemas/image_info.input.json). The tags of
// Input and Output carry the files' bounds, so that the schemas
// runner.SchemaFor derives accept and refuse what the files do (a test
// holds them together).
type Input struct {
	// ImageURL is an http, https or base64 data: URL of the image.
	ImageURL string `json:"image_url" jsonschema:"format=uri,minLength=1,maxLength=16777216"`
	// MaxColors caps the dominant colours listed, 1..16. Default 5.
	MaxColors int `json:"max_colors,omitempty" jsonschema:"minimum=1,maximum=16,default=5"`
}

// Output is the reply body (schemas/image_info.output.json).
type Output struct {
	Width  int    `json:"width" jsonschema:"minimum=1"`
	Height int    `json:"height" jsonschema:"minimum=1"`
	Format string `json:"format" jsonschema:"enum=png,enum=jpeg,enum=gif,enum=webp,enum=bmp,enum=tiff"`
	Bytes  int    `json:"bytes" jsonschema:"minimum=0"`
	// PHash is goimagehash's 64-bit perceptual hash, "p:" + 16 hex digits.
	PHash  string  `json:"phash" jsonschema:"pattern=^p:[0-9a-f]{16}$"`
	Colors []Color `json:"colors" jsonschema:"minItems=1"`
}

// Color is one dominant colour and the share of the picture it covers.
type Color struct {
	Hex      string  `json:"hex" jsonschema:"pattern=^#[0-9a-f]{6}$"`
	RGB      [3]int  `json:"rgb" jsonschema:"minimum=0,maximum=255"`
	Fraction float64 `json:"fraction" jsonschema:"minimum=0,maximum=1"`
}

// New returns the image_info algorithm.
func New(cfg Config) (*runner.Algorithm, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("image_info: %w", err)
	}
	cfg.setDefaults()
	if cfg.Fetcher == nil {
		f, err := imagefetch.New(imagefetch.Config{})
		if err != nil {
			return nil, fmt.Errorf("image_info: %w", err)
		}
		cfg.Fetcher = f
	}
	return runner.NewAlgorithm(runner.Spec{
		Name:         Name,
		Version:      "1.0.0",
		Description:  "Width, height, format, byte size, perceptual hash and dominant colours of an image URL.",
		InputSchema:  schemas.Bytes("image_info.input.json"),
		OutputSchema: schemas.Bytes("image_info.output.json"),
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
		return Describe(img.Decoded, in.MaxColors)
	})
}

// Describe computes the output for a decoded image. maxColors ≤ 0 means
// DefaultMaxColors.
func Describe(d imagefetch.Decoded, maxColors int) (Output, error) {
	if maxColors <= 0 {
		maxColors = DefaultMaxColors
	}
	maxColors = min(maxColors, MaxColors)
	// goimagehash resizes with a bilinear filter that skips pixels when
	// shrinking a lot; a box-filtered thumbnail first makes the hash
	// depend on the whole picture and bounds its cost.
	h, err := goimagehash.PerceptionHash(imagefetch.Shrink(d.Image, 128, 128).RGBA())
	if err != nil {
		return Output{}, fmt.Errorf("image_info: phash: %w", err) // a 500: cannot happen for a non-nil image
	}
	return Output{
		Width:  d.Width,
		Height: d.Height,
		Format: d.Format,
		Bytes:  d.Bytes,
		PHash:  h.ToString(),
		Colors: DominantColors(d.Image, maxColors),
	}, nil
}

// DominantColors returns up to k colours covering the picture, most
// frequent first: k-means in RGB over a 64×64 thumbnail (each sample an
// equal share of the area, transparency over white), seeded deterministically
// by farthest-point picking so the same picture always gives the same
// answer. Colours closer than a just-noticeable step are not split, so a
// two-colour picture gives two colours. Clusters under 0.5% are dropped.
func DominantColors(img image.Image, k int) []Color {
	const side = 64
	t := imagefetch.Shrink(img, side, side)
	n := side * side
	px := make([][3]float64, n)
	for i := 0; i < n; i++ {
		px[i] = [3]float64{float64(t.R[i]), float64(t.G[i]), float64(t.B[i])}
	}
	dist := func(a, b [3]float64) float64 {
		dr, dg, db := a[0]-b[0], a[1]-b[1], a[2]-b[2]
		return dr*dr + dg*dg + db*db
	}
	const minStep = 0.06 * 0.06 // ~15/255 in RGB distance

	// Seed: the mean, then repeatedly the pixel farthest from every centre.
	var mean [3]float64
	for _, p := range px {
		for c := range 3 {
			mean[c] += p[c] / float64(n)
		}
	}
	nearest := make([]float64, n)
	for i := range nearest {
		nearest[i] = math.Inf(1)
	}
	var centres [][3]float64
	first := 0
	for i, p := range px {
		if dist(p, mean) < dist(px[first], mean) {
			first = i
		}
	}
	centres = append(centres, px[first])
	for len(centres) < k {
		far, farD := -1, minStep
		last := centres[len(centres)-1]
		for i, p := range px {
			nearest[i] = min(nearest[i], dist(p, last))
			if nearest[i] > farD {
				far, farD = i, nearest[i]
			}
		}
		if far < 0 {
			break
		}
		centres = append(centres, px[far])
	}

	// Lloyd iterations.
	assign := make([]int, n)
	counts := make([]int, len(centres))
	for iter := 0; iter < 12; iter++ {
		changed := false
		for i, p := range px {
			best, bestD := 0, math.Inf(1)
			for c, ce := range centres {
				if d := dist(p, ce); d < bestD {
					best, bestD = c, d
				}
			}
			if assign[i] != best {
				assign[i], changed = best, true
			}
		}
		sums := make([][3]float64, len(centres))
		clear(counts)
		for i, p := range px {
			c := assign[i]
			counts[c]++
			for ch := range 3 {
				sums[c][ch] += p[ch]
			}
		}
		for c := range centres {
			if counts[c] > 0 {
				for ch := range 3 {
					centres[c][ch] = sums[c][ch] / float64(counts[c])
				}
			}
		}
		if !changed && iter > 0 {
			break
		}
	}

	var out []Color
	for c, ce := range centres {
		f := float64(counts[c]) / float64(n)
		if f < 0.005 {
			continue
		}
		rgb := [3]int{to255(ce[0]), to255(ce[1]), to255(ce[2])}
		out = append(out, Color{
			Hex:      fmt.Sprintf("#%02x%02x%02x", rgb[0], rgb[1], rgb[2]),
			RGB:      rgb,
			Fraction: math.Round(f*1000) / 1000,
		})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Fraction > out[j].Fraction })
	return out
}

func to255(v float64) int { return int(math.Round(math.Max(0, math.Min(1, v)) * 255)) }
