package imagefetch

import (
	"image"
	"image/color"
)

// Thumb is a small RGB image as three float32 planes with values in [0,1],
// row-major, W×H samples each. Algorithms compute their features from a
// Thumb instead of the decoded image: one pass over the pixels, then
// everything else is cheap.
type Thumb struct {
	W, H    int
	R, G, B []float32
}

// Shrink resamples img to w×h with a box filter: each sample is the mean of
// the source pixels it covers, so downscaling does not alias; when the
// source is smaller than the target a sample repeats the nearest pixel.
// Transparent pixels are composited over white. The aspect ratio is not
// kept: callers that care pass a w×h of the same shape. Common decoder
// outputs (YCbCr, RGBA, NRGBA, Gray, Paletted) take a fast path, and every
// other image type reads its pixels through image.RGBA64Image: Shrink
// allocates the thumbnail and a few rows, never per pixel, so what it costs
// in memory does not grow with the picture.
func Shrink(img image.Image, w, h int) *Thumb {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	t := &Thumb{W: w, H: h, R: make([]float32, w*h), G: make([]float32, w*h), B: make([]float32, w*h)}
	if sw <= 0 || sh <= 0 || w <= 0 || h <= 0 {
		return t
	}
	if sw >= w && sh >= h && shrinkFast(img, t) {
		return t
	}
	x0 := spans(sw, w)
	y0 := spans(sh, h)
	row := make([]float32, 3*sw)
	acc := make([]float32, 3*w)
	conv := rowConverter(img)
	for j := 0; j < h; j++ {
		clear(acc)
		ya, yb := y0[j], max(y0[j+1], y0[j]+1)
		for y := ya; y < yb; y++ {
			conv(b.Min.Y+y, row)
			for i := 0; i < w; i++ {
				xa, xb := x0[i], max(x0[i+1], x0[i]+1)
				var r, g, bl float32
				for x := xa; x < xb; x++ {
					r += row[3*x]
					g += row[3*x+1]
					bl += row[3*x+2]
				}
				acc[3*i] += r
				acc[3*i+1] += g
				acc[3*i+2] += bl
			}
		}
		for i := 0; i < w; i++ {
			n := float32((yb-ya)*(max(x0[i+1], x0[i]+1)-x0[i])) * 255
			t.R[j*w+i] = acc[3*i] / n
			t.G[j*w+i] = acc[3*i+1] / n
			t.B[j*w+i] = acc[3*i+2] / n
		}
	}
	return t
}

// shrinkFast is Shrink for the usual case, a picture larger than the
// thumbnail in a format decoders commonly produce: integer sums per cell in
// one pass over the pixels. YCbCr is averaged as YCbCr and converted once
// per cell (the conversion is affine, so this only differs where the
// per-pixel conversion would have clipped). It reports false for other
// image types.
func shrinkFast(img image.Image, t *Thumb) bool {
	b := img.Bounds()
	sw, sh, w, h := b.Dx(), b.Dy(), t.W, t.H
	// Same partition as the generic path: cell i covers [xs[i], xs[i+1]).
	xs, ys := spans(sw, w), spans(sh, h)
	acc := make([]uint64, 3*w)
	var addRow func(y int) // adds absolute row y into acc
	ycc := false
	unit := float32(255) // the value of an opaque white sample in acc
	switch m := img.(type) {
	case *image.YCbCr:
		ycc = true
		var hs, vs uint
		switch m.SubsampleRatio {
		case image.YCbCrSubsampleRatio422:
			hs = 1
		case image.YCbCrSubsampleRatio420:
			hs, vs = 1, 1
		case image.YCbCrSubsampleRatio440:
			vs = 1
		case image.YCbCrSubsampleRatio411:
			hs = 2
		case image.YCbCrSubsampleRatio410:
			hs, vs = 2, 1
		}
		addRow = func(y int) {
			yrow := m.Y[m.YOffset(b.Min.X, y):]
			crow := (y>>vs - m.Rect.Min.Y>>vs) * m.CStride
			cx0 := m.Rect.Min.X >> hs
			for i := 0; i < w; i++ {
				var sy, scb, scr uint64
				for x := xs[i]; x < xs[i+1]; x++ {
					ci := crow + (b.Min.X+x)>>hs - cx0
					sy += uint64(yrow[x])
					scb += uint64(m.Cb[ci])
					scr += uint64(m.Cr[ci])
				}
				acc[3*i] += sy
				acc[3*i+1] += scb
				acc[3*i+2] += scr
			}
		}
	case *image.RGBA, *image.NRGBA:
		var pix []uint8
		var stride int
		premul := false
		if rgba, ok := m.(*image.RGBA); ok {
			pix, stride, premul = rgba.Pix[rgba.PixOffset(b.Min.X, b.Min.Y):], rgba.Stride, true
		} else {
			nrgba := m.(*image.NRGBA)
			pix, stride = nrgba.Pix[nrgba.PixOffset(b.Min.X, b.Min.Y):], nrgba.Stride
		}
		addRow = func(y int) {
			row := pix[(y-b.Min.Y)*stride:]
			for i := 0; i < w; i++ {
				var r, g, bl uint64
				p := row[4*xs[i] : 4*xs[i+1]]
				if premul {
					for k := 0; k+3 < len(p); k += 4 {
						a := 255 - uint64(p[k+3])
						r += uint64(p[k]) + a
						g += uint64(p[k+1]) + a
						bl += uint64(p[k+2]) + a
					}
				} else {
					for k := 0; k+3 < len(p); k += 4 {
						a := uint64(p[k+3])
						white := 255 * (255 - a)
						r += (uint64(p[k])*a + white) / 255
						g += (uint64(p[k+1])*a + white) / 255
						bl += (uint64(p[k+2])*a + white) / 255
					}
				}
				acc[3*i] += r
				acc[3*i+1] += g
				acc[3*i+2] += bl
			}
		}
	case *image.Gray:
		addRow = func(y int) {
			p := m.Pix[m.PixOffset(b.Min.X, y):]
			for i := 0; i < w; i++ {
				var v uint64
				for _, px := range p[xs[i]:xs[i+1]] {
					v += uint64(px)
				}
				acc[3*i] += v
				acc[3*i+1] += v
				acc[3*i+2] += v
			}
		}
	case *image.Paletted:
		var pal [256][3]uint64
		for i := range pal {
			if i < len(m.Palette) {
				c := overWhite(m.Palette[i])
				pal[i] = [3]uint64{uint64(c[0] + 0.5), uint64(c[1] + 0.5), uint64(c[2] + 0.5)}
			} else {
				pal[i] = [3]uint64{255, 255, 255}
			}
		}
		addRow = func(y int) {
			p := m.Pix[m.PixOffset(b.Min.X, y):]
			for i := 0; i < w; i++ {
				var r, g, bl uint64
				for _, px := range p[xs[i]:xs[i+1]] {
					v := &pal[px]
					r += v[0]
					g += v[1]
					bl += v[2]
				}
				acc[3*i] += r
				acc[3*i+1] += g
				acc[3*i+2] += bl
			}
		}
	case image.RGBA64Image:
		// 16-bit types (Gray16, RGBA64, NRGBA64), CMYK, NYCbCrA and the
		// rest: premultiplied 16-bit samples, no allocation per pixel.
		unit = 0xffff
		addRow = func(y int) {
			for i := 0; i < w; i++ {
				var r, g, bl uint64
				for x := xs[i]; x < xs[i+1]; x++ {
					c := m.RGBA64At(b.Min.X+x, y)
					white := 0xffff - uint64(c.A)
					r += uint64(c.R) + white
					g += uint64(c.G) + white
					bl += uint64(c.B) + white
				}
				acc[3*i] += r
				acc[3*i+1] += g
				acc[3*i+2] += bl
			}
		}
	default:
		return false
	}
	for j := 0; j < h; j++ {
		clear(acc)
		rows := ys[j+1] - ys[j]
		for y := ys[j]; y < ys[j+1]; y++ {
			addRow(b.Min.Y + y)
		}
		for i := 0; i < w; i++ {
			n := float32(rows*(xs[i+1]-xs[i])) * unit
			r, g, bl := float32(acc[3*i])/n, float32(acc[3*i+1])/n, float32(acc[3*i+2])/n
			if ycc {
				// Mean Y, Cb, Cr to RGB, JFIF full range.
				yy, cb, cr := r, g*255-128, bl*255-128
				r = clamp01(yy + 1.402*cr/255)
				g = clamp01(yy - (0.344136*cb+0.714136*cr)/255)
				bl = clamp01(yy + 1.772*cb/255)
			}
			t.R[j*w+i], t.G[j*w+i], t.B[j*w+i] = r, g, bl
		}
	}
	return true
}

func clamp01(v float32) float32 { return min(max(v, 0), 1) }

// spans returns n+1 boundaries splitting [0,size) into n nearly equal
// ranges; a range may be empty when size < n (Shrink widens it to one).
func spans(size, n int) []int {
	s := make([]int, n+1)
	for i := range s {
		s[i] = min(i*size/n, size-1)
	}
	s[n] = size
	return s
}

// rowConverter returns a function writing source row y (absolute) as
// 0..255 RGB triples into dst, composited over white.
func rowConverter(img image.Image) func(y int, dst []float32) {
	b := img.Bounds()
	switch m := img.(type) {
	case *image.YCbCr:
		return func(y int, dst []float32) {
			yi := m.YOffset(b.Min.X, y)
			for x := 0; x < b.Dx(); x++ {
				ci := m.COffset(b.Min.X+x, y)
				r, g, bl := color.YCbCrToRGB(m.Y[yi+x], m.Cb[ci], m.Cr[ci])
				dst[3*x], dst[3*x+1], dst[3*x+2] = float32(r), float32(g), float32(bl)
			}
		}
	case *image.RGBA:
		return func(y int, dst []float32) {
			p := m.Pix[m.PixOffset(b.Min.X, y):]
			for x := 0; x < b.Dx(); x++ {
				a := 255 - float32(p[4*x+3])
				dst[3*x], dst[3*x+1], dst[3*x+2] = float32(p[4*x])+a, float32(p[4*x+1])+a, float32(p[4*x+2])+a
			}
		}
	case *image.NRGBA:
		return func(y int, dst []float32) {
			p := m.Pix[m.PixOffset(b.Min.X, y):]
			for x := 0; x < b.Dx(); x++ {
				a := float32(p[4*x+3]) / 255
				w := 255 * (1 - a)
				dst[3*x], dst[3*x+1], dst[3*x+2] = float32(p[4*x])*a+w, float32(p[4*x+1])*a+w, float32(p[4*x+2])*a+w
			}
		}
	case *image.Gray:
		return func(y int, dst []float32) {
			p := m.Pix[m.PixOffset(b.Min.X, y):]
			for x := 0; x < b.Dx(); x++ {
				v := float32(p[x])
				dst[3*x], dst[3*x+1], dst[3*x+2] = v, v, v
			}
		}
	case *image.Paletted:
		pal := make([][3]float32, 256)
		for i := range pal {
			c := color.Color(color.Transparent)
			if i < len(m.Palette) {
				c = m.Palette[i]
			}
			pal[i] = overWhite(c)
		}
		return func(y int, dst []float32) {
			p := m.Pix[m.PixOffset(b.Min.X, y):]
			for x := 0; x < b.Dx(); x++ {
				c := pal[p[x]]
				dst[3*x], dst[3*x+1], dst[3*x+2] = c[0], c[1], c[2]
			}
		}
	case image.RGBA64Image:
		return func(y int, dst []float32) {
			for x := 0; x < b.Dx(); x++ {
				c := m.RGBA64At(b.Min.X+x, y)
				w := float32(0xffff - c.A)
				dst[3*x], dst[3*x+1], dst[3*x+2] = (float32(c.R)+w)/257, (float32(c.G)+w)/257, (float32(c.B)+w)/257
			}
		}
	default:
		return func(y int, dst []float32) {
			for x := 0; x < b.Dx(); x++ {
				c := overWhite(img.At(b.Min.X+x, y))
				dst[3*x], dst[3*x+1], dst[3*x+2] = c[0], c[1], c[2]
			}
		}
	}
}

// overWhite composites c over white and returns 0..255 RGB.
func overWhite(c color.Color) [3]float32 {
	r, g, b, a := c.RGBA() // premultiplied, 16 bits
	w := float32(0xffff - a)
	return [3]float32{(float32(r) + w) / 257, (float32(g) + w) / 257, (float32(b) + w) / 257}
}

// Luma returns the Rec. 601 luma plane of t, values in [0,1].
func (t *Thumb) Luma() []float32 {
	out := make([]float32, len(t.R))
	for i := range out {
		out[i] = 0.299*t.R[i] + 0.587*t.G[i] + 0.114*t.B[i]
	}
	return out
}

// RGBA returns t as an opaque *image.RGBA, for libraries that take an
// image.Image.
func (t *Thumb) RGBA() *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, t.W, t.H))
	for i := range t.R {
		m.Pix[4*i] = to8(t.R[i])
		m.Pix[4*i+1] = to8(t.G[i])
		m.Pix[4*i+2] = to8(t.B[i])
		m.Pix[4*i+3] = 255
	}
	return m
}

func to8(v float32) uint8 {
	switch {
	case v <= 0:
		return 0
	case v >= 1:
		return 255
	}
	return uint8(v*255 + 0.5)
}
