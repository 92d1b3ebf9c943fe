package synth

import (
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"strings"
)

var words = strings.Fields(`when you the me my code tests deploy friday monday coffee cat dog
	nobody literally every time boss meeting email bug fix works prod local why how
	finally again never always today tomorrow weekend plan budget quick just one more`)

func rng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

func randColor(r *rand.Rand) color.RGBA {
	return color.RGBA{uint8(r.IntN(256)), uint8(r.IntN(256)), uint8(r.IntN(256)), 255}
}

func randWords(r *rand.Rand, n int) string {
	var w []string
	for i := 0; i < n; i++ {
		w = append(w, strings.ToUpper(words[r.IntN(len(words))]))
	}
	return strings.Join(w, " ")
}

// aspects are the width/height ratios random images are drawn at.
var aspects = []float64{1, 4.0 / 3, 3.0 / 2, 16.0 / 9, 3.0 / 4, 2.0 / 3}

// Layout draws a random meme-like layout: a grid of panels with colour
// fields or gradients, figures, shapes and text bands. Different seeds give
// different layouts; none of them is a demo template. width is the pixel
// width; the height follows from a random aspect ratio.
func (r *Renderer) Layout(seed uint64, width int) *image.RGBA {
	g := rng(seed)
	aspect := aspects[g.IntN(len(aspects))]
	c := r.newCanvas(width, int(float64(width)/aspect), white)
	rows, cols := 1+g.IntN(3), 1+g.IntN(2)
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			x0, y0 := float64(j)/float64(cols), float64(i)/float64(rows)
			x1, y1 := float64(j+1)/float64(cols), float64(i+1)/float64(rows)
			switch g.IntN(3) {
			case 0:
				c.rect(x0, y0, x1, y1, randColor(g))
			case 1:
				c.vgrad(x0, y0, x1, y1, randColor(g), randColor(g))
			default:
				c.hgrad(x0, y0, x1, y1, randColor(g), randColor(g))
			}
			pw, ph := x1-x0, y1-y0
			for k := g.IntN(4); k > 0; k-- {
				cx, cy := x0+pw*(0.15+0.7*g.Float64()), y0+ph*(0.15+0.7*g.Float64())
				switch g.IntN(4) {
				case 0:
					c.ellipse(cx, cy, pw*(0.05+0.2*g.Float64()), ph*(0.05+0.2*g.Float64()), randColor(g))
				case 1:
					c.rect(cx-pw*0.15*g.Float64(), cy-ph*0.15*g.Float64(), cx+pw*0.15*g.Float64(), cy+ph*0.15*g.Float64(), randColor(g))
				case 2:
					c.figure(cx, y1, ph*(0.5+0.4*g.Float64()), randColor(g), skin1, hairBr)
				default:
					c.poly(randColor(g), cx, cy-ph*0.2, cx-pw*0.2, cy+ph*0.2, cx+pw*0.2, cy+ph*0.2)
				}
			}
			if g.IntN(3) == 0 {
				band := ph * 0.2
				by := y0
				if g.IntN(2) == 0 {
					by = y1 - band
				}
				bg := white
				fg := black
				if g.IntN(2) == 0 {
					bg, fg = black, white
				}
				c.rect(x0, by, x1, by+band, bg)
				c.text(x0, by, x1, by+band, randWords(g, 2+g.IntN(3)), fg, nil)
			}
		}
	}
	if g.IntN(2) == 0 {
		for i := 1; i < rows; i++ {
			y := float64(i) / float64(rows)
			c.rect(0, y-0.004, 1, y+0.004, black)
		}
		for j := 1; j < cols; j++ {
			x := float64(j) / float64(cols)
			c.rect(x-0.004, 0, x+0.004, 1, black)
		}
	}
	return c.img
}

// Noise is w×h of independent uniformly random pixels.
func Noise(seed uint64, w, h int) *image.RGBA {
	g := rng(seed)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = uint8(g.IntN(256)), uint8(g.IntN(256)), uint8(g.IntN(256)), 255
	}
	return img
}

// Photo imitates a photograph's statistics: a sky-to-ground gradient with
// soft blobs of colour and mild grain, no hard edges.
func Photo(seed uint64, w, h int) *image.RGBA {
	g := rng(seed)
	top, horizon, ground := randColor(g), randColor(g), randColor(g)
	hy := 0.3 + 0.4*g.Float64()
	type blob struct {
		x, y, s, a float64
		c          color.RGBA
	}
	var blobs []blob
	for i := 2 + g.IntN(5); i > 0; i-- {
		blobs = append(blobs, blob{g.Float64(), g.Float64(), 0.05 + 0.25*g.Float64(), 0.5 + 0.5*g.Float64(), randColor(g)})
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		fy := float64(y) / float64(h)
		var base color.RGBA
		if fy < hy {
			base = mix(top, horizon, fy/hy)
		} else {
			base = mix(horizon, ground, (fy-hy)/(1-hy))
		}
		for x := 0; x < w; x++ {
			fx := float64(x) / float64(w)
			r, gg, b := float64(base.R), float64(base.G), float64(base.B)
			for _, bl := range blobs {
				d := ((fx-bl.x)*(fx-bl.x) + (fy-bl.y)*(fy-bl.y)) / (bl.s * bl.s)
				a := bl.a * math.Exp(-d)
				r = r*(1-a) + float64(bl.c.R)*a
				gg = gg*(1-a) + float64(bl.c.G)*a
				b = b*(1-a) + float64(bl.c.B)*a
			}
			n := g.NormFloat64() * 4
			img.SetRGBA(x, y, color.RGBA{clamp8(r + n), clamp8(gg + n), clamp8(b + n), 255})
		}
	}
	return img
}

// TextPage is black text lines on white, like a screenshot of a post.
func (r *Renderer) TextPage(seed uint64, w, h int) *image.RGBA {
	g := rng(seed)
	c := r.newCanvas(w, h, white)
	lines := 4 + g.IntN(6)
	for i := 0; i < lines; i++ {
		y0 := 0.05 + 0.9*float64(i)/float64(lines)
		c.text(0.03, y0, 0.3+0.67*g.Float64(), y0+0.9/float64(lines)*0.7, randWords(g, 3+g.IntN(4)), black, nil)
	}
	return c.img
}

// Solid is a w×h image of one colour.
func Solid(c color.RGBA, w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, 255
	}
	return img
}

func clamp8(v float64) uint8 {
	switch {
	case v <= 0:
		return 0
	case v >= 255:
		return 255
	}
	return uint8(v + 0.5)
}
