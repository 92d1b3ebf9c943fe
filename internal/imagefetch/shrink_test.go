package imagefetch

import (
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"testing"
)

// TestShrinkFastMatchesGeneric checks every fast path against the generic
// per-pixel path on the same picture.
func TestShrinkFastMatchesGeneric(t *testing.T) {
	g := rand.New(rand.NewPCG(1, 2))
	const w, h = 203, 157
	rgba := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range rgba.Pix {
		rgba.Pix[i] = uint8(g.IntN(256))
	}
	for i := 3; i < len(rgba.Pix); i += 4 {
		rgba.Pix[i] = 255
	}
	nrgba := image.NewNRGBA(rgba.Rect)
	gray := image.NewGray(rgba.Rect)
	pal := image.NewPaletted(rgba.Rect, color.Palette{color.White, color.Black, color.RGBA{200, 30, 30, 255}, color.NRGBA{0, 0, 255, 128}})
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := rgba.RGBAAt(x, y)
			nrgba.SetNRGBA(x, y, color.NRGBA{c.R, c.G, c.B, uint8(g.IntN(256))})
			gray.SetGray(x, y, color.Gray{c.R})
			pal.SetColorIndex(x, y, uint8(g.IntN(4)))
		}
	}
	ycc := map[string]*image.YCbCr{}
	for name, r := range map[string]image.YCbCrSubsampleRatio{"444": image.YCbCrSubsampleRatio444, "422": image.YCbCrSubsampleRatio422, "420": image.YCbCrSubsampleRatio420, "440": image.YCbCrSubsampleRatio440, "411": image.YCbCrSubsampleRatio411, "410": image.YCbCrSubsampleRatio410} {
		m := image.NewYCbCr(image.Rect(3, 5, 3+w, 5+h), r)
		for i := range m.Y {
			m.Y[i] = uint8(g.IntN(256))
		}
		for i := range m.Cb {
			// Moderate chroma: where a pixel's RGB clips, averaging YCbCr
			// first legitimately differs from averaging RGB.
			m.Cb[i], m.Cr[i] = uint8(108+g.IntN(40)), uint8(108+g.IntN(40))
		}
		for i := range m.Y {
			m.Y[i] = 40 + m.Y[i]/2
		}
		ycc[name] = m
	}
	cases := map[string]image.Image{"rgba": rgba, "nrgba": nrgba, "gray": gray, "paletted": pal,
		"sub": rgba.SubImage(image.Rect(10, 7, 190, 150))}
	for n, m := range ycc {
		cases["ycbcr"+n] = m
		cases["ycbcr"+n+"_sub"] = m.SubImage(image.Rect(8, 9, 180, 140))
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			fast := Shrink(img, 16, 12)
			slow := Shrink(generic{img}, 16, 12)
			for i := range fast.R {
				for _, p := range [][2]float32{{fast.R[i], slow.R[i]}, {fast.G[i], slow.G[i]}, {fast.B[i], slow.B[i]}} {
					if math.Abs(float64(p[0]-p[1])) > 0.01 {
						t.Fatalf("sample %d: fast %v, generic %v", i, p[0], p[1])
					}
				}
			}
		})
	}
}

// generic hides the concrete type so Shrink takes its generic path.
type generic struct{ image.Image }

func TestShrinkSmallSource(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 2, 1))
	img.Pix[0], img.Pix[1] = 0, 255
	th := Shrink(img, 4, 2)
	want := []float32{0, 0, 1, 1, 0, 0, 1, 1}
	for i, v := range th.R {
		if v != want[i] {
			t.Fatalf("R = %v, want %v", th.R, want)
		}
	}
}
