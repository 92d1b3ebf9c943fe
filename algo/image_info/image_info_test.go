package imageinfo

import (
	"image"
	"image/color"
	"math"
	"regexp"
	"testing"

	"github.com/corona10/goimagehash"

	"github.com/pnpworker/pnpworker/internal/imagefetch"
)

// split returns a w×h image whose left part (fraction f of the width) is
// a and the rest b.
func split(w, h int, f float64, a, b color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := b
			if float64(x) < f*float64(w) {
				c = a
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func TestDominantColors(t *testing.T) {
	red, blue := color.RGBA{220, 20, 30, 255}, color.RGBA{10, 40, 200, 255}
	cases := []struct {
		name string
		img  image.Image
		k    int
		want []Color
	}{
		{"one colour", split(100, 50, 0, red, red), 5, []Color{{Hex: "#dc141e", RGB: [3]int{220, 20, 30}, Fraction: 1}}},
		{"two colours, 75/25", split(128, 64, 0.75, red, blue), 5, []Color{
			{Hex: "#dc141e", RGB: [3]int{220, 20, 30}, Fraction: 0.75},
			{Hex: "#0a28c8", RGB: [3]int{10, 40, 200}, Fraction: 0.25},
		}},
		{"k=1 gives the closest single colour", split(128, 64, 0.75, red, blue), 1, nil},
		{"transparent is white", image.NewNRGBA(image.Rect(0, 0, 10, 10)), 3, []Color{{Hex: "#ffffff", RGB: [3]int{255, 255, 255}, Fraction: 1}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := DominantColors(tc.img, tc.k)
			if len(got) > tc.k || len(got) == 0 {
				t.Fatalf("%d colours for k=%d: %v", len(got), tc.k, got)
			}
			if tc.want == nil {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i].Hex != tc.want[i].Hex || math.Abs(got[i].Fraction-tc.want[i].Fraction) > 0.02 {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	img := split(300, 200, 0.5, color.RGBA{255, 255, 255, 255}, color.RGBA{0, 0, 0, 255})
	out, err := Describe(imagefetch.Decoded{Image: img, Format: "png", Width: 300, Height: 200, Bytes: 1234}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if out.Width != 300 || out.Height != 200 || out.Format != "png" || out.Bytes != 1234 || len(out.Colors) != 2 {
		t.Fatalf("got %+v", out)
	}
	if !regexp.MustCompile(`^p:[0-9a-f]{16}$`).MatchString(out.PHash) {
		t.Fatalf("phash %q", out.PHash)
	}
	// The hash is goimagehash's: it parses back, and is close to the hash
	// of the full-size image.
	h, err := goimagehash.ImageHashFromString(out.PHash)
	if err != nil {
		t.Fatal(err)
	}
	full, err := goimagehash.PerceptionHash(img)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := h.Distance(full); d > 6 {
		t.Fatalf("hash %s is %d bits from goimagehash on the full image (%s)", out.PHash, d, full.ToString())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{Timeout: -1}).Validate(); err == nil {
		t.Fatal("negative timeout accepted")
	}
}
