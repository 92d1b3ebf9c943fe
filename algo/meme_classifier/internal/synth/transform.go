package synth

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math"

	xdraw "golang.org/x/image/draw"
)

// toRGBA copies any image into a fresh *image.RGBA at the origin.
func toRGBA(src image.Image) *image.RGBA {
	b := src.Bounds()
	dst := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	xdraw.Draw(dst, dst.Bounds(), src, b.Min, xdraw.Src)
	return dst
}

// Scale resizes src by factor f with a bilinear filter.
func Scale(src image.Image, f float64) *image.RGBA {
	b := src.Bounds()
	w, h := max(1, int(math.Round(float64(b.Dx())*f))), max(1, int(math.Round(float64(b.Dy())*f)))
	return Resize(src, w, h)
}

// Resize resizes src to w×h with a bilinear filter.
func Resize(src image.Image, w, h int) *image.RGBA {
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	xdraw.BiLinear.Scale(dst, dst.Bounds(), src, src.Bounds(), xdraw.Src, nil)
	return dst
}

// JPEG encodes src at quality q and returns the bytes and the decoded
// result.
func JPEG(src image.Image, q int) ([]byte, image.Image, error) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, src, &jpeg.Options{Quality: q}); err != nil {
		return nil, nil, fmt.Errorf("synth: jpeg: %w", err)
	}
	img, err := jpeg.Decode(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return nil, nil, fmt.Errorf("synth: jpeg: %w", err)
	}
	return buf.Bytes(), img, nil
}

// Crop removes the fraction f of the width and of the height. ax and ay
// (0..1) say where the cut goes: 0 cuts it all from the left (top), 1 all
// from the right (bottom), 0.5 half from each side.
func Crop(src image.Image, f, ax, ay float64) *image.RGBA {
	b := src.Bounds()
	cw, ch := int(math.Round(float64(b.Dx())*f)), int(math.Round(float64(b.Dy())*f))
	x0, y0 := b.Min.X+int(math.Round(float64(cw)*ax)), b.Min.Y+int(math.Round(float64(ch)*ay))
	r := image.Rect(x0, y0, x0+b.Dx()-cw, y0+b.Dy()-ch)
	dst := image.NewRGBA(image.Rect(0, 0, r.Dx(), r.Dy()))
	xdraw.Draw(dst, dst.Bounds(), src, r.Min, xdraw.Src)
	return dst
}

// Caption adds bands of text above (top != "") and below (bottom != "") the
// image, each frac of the original height: black text on white, the
// layout meme generators use.
func (r *Renderer) Caption(src image.Image, top, bottom string, frac float64) *image.RGBA {
	b := src.Bounds()
	band := int(math.Round(float64(b.Dy()) * frac))
	th, bh := 0, 0
	if top != "" {
		th = band
	}
	if bottom != "" {
		bh = band
	}
	dst := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()+th+bh))
	xdraw.Draw(dst, dst.Bounds(), image.NewUniform(white), image.Point{}, xdraw.Src)
	xdraw.Draw(dst, image.Rect(0, th, b.Dx(), th+b.Dy()), src, b.Min, xdraw.Src)
	if top != "" {
		drawText(r, dst, image.Rect(0, 0, b.Dx(), th), top, black, nil)
	}
	if bottom != "" {
		drawText(r, dst, image.Rect(0, th+b.Dy(), b.Dx(), th+b.Dy()+bh), bottom, black, nil)
	}
	return dst
}

// Overlay draws classic meme captions onto the image: white text with a
// black outline over its top and bottom fifth.
func (r *Renderer) Overlay(src image.Image, top, bottom string) *image.RGBA {
	dst := toRGBA(src)
	w, h := dst.Bounds().Dx(), dst.Bounds().Dy()
	out := black
	if top != "" {
		drawText(r, dst, image.Rect(0, h/40, w, h/5), top, white, &out)
	}
	if bottom != "" {
		drawText(r, dst, image.Rect(0, h*4/5, w, h-h/40), bottom, white, &out)
	}
	return dst
}

// Brightness multiplies every channel by f, clipping at white.
func Brightness(src image.Image, f float64) *image.RGBA {
	dst := toRGBA(src)
	for i := 0; i < len(dst.Pix); i += 4 {
		for k := 0; k < 3; k++ {
			dst.Pix[i+k] = clamp8(float64(dst.Pix[i+k]) * f)
		}
	}
	return dst
}

// Rotate turns src by deg degrees about its centre, keeping its size;
// corners that come from outside the image are white.
func Rotate(src image.Image, deg float64) *image.RGBA {
	s := toRGBA(src)
	w, h := s.Bounds().Dx(), s.Bounds().Dy()
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	sin, cos := math.Sincos(deg * math.Pi / 180)
	cx, cy := float64(w)/2, float64(h)/2
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			dx, dy := float64(x)+0.5-cx, float64(y)+0.5-cy
			sx, sy := cos*dx+sin*dy+cx-0.5, -sin*dx+cos*dy+cy-0.5
			dst.SetRGBA(x, y, bilinear(s, sx, sy))
		}
	}
	return dst
}

func bilinear(s *image.RGBA, x, y float64) color.RGBA {
	w, h := s.Bounds().Dx(), s.Bounds().Dy()
	if x < -0.5 || y < -0.5 || x > float64(w)-0.5 || y > float64(h)-0.5 {
		return white
	}
	x0, y0 := int(math.Floor(x)), int(math.Floor(y))
	fx, fy := x-float64(x0), y-float64(y0)
	at := func(x, y int) color.RGBA {
		return s.RGBAAt(min(max(x, 0), w-1), min(max(y, 0), h-1))
	}
	c00, c10, c01, c11 := at(x0, y0), at(x0+1, y0), at(x0, y0+1), at(x0+1, y0+1)
	l := func(a, b, c, d uint8) uint8 {
		return clamp8(float64(a)*(1-fx)*(1-fy) + float64(b)*fx*(1-fy) + float64(c)*(1-fx)*fy + float64(d)*fx*fy)
	}
	return color.RGBA{l(c00.R, c10.R, c01.R, c11.R), l(c00.G, c10.G, c01.G, c11.G), l(c00.B, c10.B, c01.B, c11.B), 255}
}

// Variant is one named transformation of a template.
type Variant struct {
	Name  string
	Apply func(r *Renderer, src image.Image) (image.Image, error)
}

func pure(f func(image.Image) image.Image) func(*Renderer, image.Image) (image.Image, error) {
	return func(_ *Renderer, src image.Image) (image.Image, error) { return f(src), nil }
}

// Variants are the transformations the classifier must see through: the
// ones the issue names (downscale to 50%, JPEG quality 40, a 5% crop,
// caption bands top and bottom, brightness ±20%, small rotations) plus
// overlaid captions and a combination.
func Variants() []Variant {
	return []Variant{
		{"scale50", pure(func(s image.Image) image.Image { return Scale(s, 0.5) })},
		{"jpeg40", func(_ *Renderer, s image.Image) (image.Image, error) { _, img, err := JPEG(s, 40); return img, err }},
		{"crop5_corner", pure(func(s image.Image) image.Image { return Crop(s, 0.05, 0, 0) })},
		{"crop5_centre", pure(func(s image.Image) image.Image { return Crop(s, 0.05, 0.5, 0.5) })},
		{"caption_top", func(r *Renderer, s image.Image) (image.Image, error) {
			return r.Caption(s, "WHEN THE TESTS PASS", "", 0.18), nil
		}},
		{"caption_bottom", func(r *Renderer, s image.Image) (image.Image, error) {
			return r.Caption(s, "", "BUT ONLY ON MY MACHINE", 0.18), nil
		}},
		{"caption_both", func(r *Renderer, s image.Image) (image.Image, error) {
			return r.Caption(s, "ME EXPLAINING", "THE BUG I WROTE", 0.15), nil
		}},
		{"overlay_text", func(r *Renderer, s image.Image) (image.Image, error) {
			return r.Overlay(s, "NOBODY:", "ABSOLUTELY NOBODY:"), nil
		}},
		{"bright+20", pure(func(s image.Image) image.Image { return Brightness(s, 1.2) })},
		{"bright-20", pure(func(s image.Image) image.Image { return Brightness(s, 0.8) })},
		{"rotate+3", pure(func(s image.Image) image.Image { return Rotate(s, 3) })},
		{"rotate-3", pure(func(s image.Image) image.Image { return Rotate(s, -3) })},
		{"combo", func(r *Renderer, s image.Image) (image.Image, error) {
			img := r.Caption(Crop(Scale(s, 0.7), 0.04, 1, 0.5), "WHEN IT WORKS", "", 0.2)
			_, out, err := JPEG(Brightness(img, 0.85), 55)
			return out, err
		}},
	}
}

// Sample is one demo sample image: a template run through transformations
// and saved as JPEG, or (Template "") an unrelated picture.
type Sample struct {
	File     string
	Template string
	Quality  int
	Make     func(r *Renderer, src image.Image) image.Image
}

// Samples are the demo samples gengallery writes next to the gallery.
func Samples() []Sample {
	return []Sample{
		{"drake_pref_captioned.jpg", "drake_pref", 75, func(r *Renderer, s image.Image) image.Image {
			return r.Caption(s, "WRITING TESTS AFTER", "WRITING TESTS FIRST", 0.16)
		}},
		{"distracted_boyfriend_small.jpg", "distracted_boyfriend", 40, func(_ *Renderer, s image.Image) image.Image {
			return Scale(s, 0.5)
		}},
		{"two_red_buttons_cropped.jpg", "two_red_buttons", 80, func(_ *Renderer, s image.Image) image.Image {
			return Crop(s, 0.05, 0.5, 0.5)
		}},
		{"expanding_brain_dark.jpg", "expanding_brain", 80, func(_ *Renderer, s image.Image) image.Image {
			return Brightness(s, 0.8)
		}},
		{"change_my_mind_rotated.jpg", "change_my_mind", 80, func(_ *Renderer, s image.Image) image.Image {
			return Rotate(s, 3)
		}},
		{"stonks_overlay.jpg", "stonks", 70, func(r *Renderer, s image.Image) image.Image {
			return r.Overlay(Scale(s, 1.25), "MOVED ONE TICKET", "TO DONE")
		}},
		{"unrelated_photo.jpg", "", 80, func(_ *Renderer, _ image.Image) image.Image {
			return Photo(7, 400, 300)
		}},
	}
}
