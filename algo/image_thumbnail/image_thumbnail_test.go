package imagethumbnail_test

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/color"
	"image/png"
	"testing"

	imagethumbnail "github.com/pnpworker/pnpworker/algo/image_thumbnail"
)

func TestThumbnail(t *testing.T) {
	src := image.NewNRGBA(image.Rect(0, 0, 400, 200))
	for i := range src.Pix {
		src.Pix[i] = 200
	}
	cases := []struct {
		name          string
		img           image.Image
		maxSide, w, h int
	}{
		{"wide, scaled down", src, 100, 100, 50},
		{"tall, scaled down", image.NewGray(image.Rect(0, 0, 30, 300)), 60, 6, 60},
		{"fits, not enlarged", src, 1000, 400, 200},
		{"default side", image.NewGray(image.Rect(0, 0, 1024, 512)), 0, 256, 128},
		{"thin line keeps a pixel", image.NewGray(image.Rect(0, 0, 1000, 1)), 10, 10, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := imagethumbnail.Thumbnail(tc.img, tc.maxSide)
			if err != nil {
				t.Fatal(err)
			}
			if out.Width != tc.w || out.Height != tc.h || out.Format != "png" {
				t.Fatalf("got %dx%d %s, want %dx%d png", out.Width, out.Height, out.Format, tc.w, tc.h)
			}
			data, err := base64.StdEncoding.DecodeString(out.PNGBase64)
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if b := img.Bounds(); b.Dx() != tc.w || b.Dy() != tc.h {
				t.Fatalf("PNG is %v, want %dx%d", b, tc.w, tc.h)
			}
		})
	}
	// The pixels are the picture's, scaled.
	out, _ := imagethumbnail.Thumbnail(src, 100)
	data, _ := base64.StdEncoding.DecodeString(out.PNGBase64)
	img, _ := png.Decode(bytes.NewReader(data))
	if c := color.NRGBAModel.Convert(img.At(50, 25)).(color.NRGBA); c.R != 200 || c.G != 200 {
		t.Fatalf("pixel %v, want the source's grey 200", c)
	}
}
