// Package synth draws the demo meme templates, unrelated images, and the
// transformed copies (rescaled, re-encoded, cropped, captioned, rotated...)
// the classifier is tested and benchmarked against. Everything is
// deterministic: the same name or seed always gives the same pixels.
//
// Variants, Samples and the unrelated pictures in random.go are the tuning
// suite. heldout.go is the held-out suite (HeldOutKinds, HeldOutUnrelated):
// other kinds, parameters, fonts and seeds, for measuring only; tuning
// never looks at it.
//
// The templates are our own drawings of classic meme layouts (panels,
// figures, colour fields, text bands), so they carry no licence baggage;
// they stand in for the real templates an operator would put in a gallery.
package synth

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
)

// Renderer draws images. It holds the parsed caption font and a cache of
// font faces; it is not safe for concurrent use.
type Renderer struct {
	font  *opentype.Font
	faces map[int]font.Face
	// other fonts, for the held-out suite only (see heldout.go)
	fonts     map[Font]*opentype.Font
	fontFaces map[fontSize]font.Face
}

// NewRenderer parses the embedded Go Bold font (BSD licence, part of
// golang.org/x/image) used for every text.
func NewRenderer() (*Renderer, error) {
	f, err := opentype.Parse(gobold.TTF)
	if err != nil {
		return nil, fmt.Errorf("synth: parse font: %w", err)
	}
	return &Renderer{font: f, faces: map[int]font.Face{}}, nil
}

func (r *Renderer) face(px int) font.Face {
	if f, ok := r.faces[px]; ok {
		return f
	}
	f, err := opentype.NewFace(r.font, &opentype.FaceOptions{Size: float64(px), DPI: 72, Hinting: font.HintingNone})
	if err != nil {
		panic(fmt.Sprintf("synth: face %dpx: %v", px, err)) // only fails for invalid sizes
	}
	r.faces[px] = f
	return f
}

// canvas is an RGBA image addressed in fractions of its width and height,
// so a layout is independent of the pixel size it is drawn at.
type canvas struct {
	r   *Renderer
	img *image.RGBA
	w   float64
	h   float64
}

func (r *Renderer) newCanvas(w, h int, bg color.RGBA) *canvas {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(bg), image.Point{}, draw.Src)
	return &canvas{r: r, img: img, w: float64(w), h: float64(h)}
}

// hex parses "#rrggbb".
func hex(s string) color.RGBA {
	var c color.RGBA
	c.A = 255
	if _, err := fmt.Sscanf(s, "#%02x%02x%02x", &c.R, &c.G, &c.B); err != nil {
		panic("synth: bad colour " + s)
	}
	return c
}

func (c *canvas) px(fx, fy float64) (int, int) {
	return int(math.Round(fx * c.w)), int(math.Round(fy * c.h))
}

// rect fills the rectangle [x0,x1)×[y0,y1), in fractions.
func (c *canvas) rect(x0, y0, x1, y1 float64, col color.RGBA) {
	a, b := c.px(x0, y0)
	d, e := c.px(x1, y1)
	draw.Draw(c.img, image.Rect(a, b, d, e), image.NewUniform(col), image.Point{}, draw.Src)
}

// frame draws a border of thickness t (fraction of width) around a rectangle.
func (c *canvas) frame(x0, y0, x1, y1, t float64, col color.RGBA) {
	ty := t * c.w / c.h
	c.rect(x0, y0, x1, y0+ty, col)
	c.rect(x0, y1-ty, x1, y1, col)
	c.rect(x0, y0, x0+t, y1, col)
	c.rect(x1-t, y0, x1, y1, col)
}

// vgrad fills a rectangle with a vertical gradient from top to bottom.
func (c *canvas) vgrad(x0, y0, x1, y1 float64, top, bottom color.RGBA) {
	a, b := c.px(x0, y0)
	d, e := c.px(x1, y1)
	for y := b; y < e; y++ {
		t := 0.0
		if e-b > 1 {
			t = float64(y-b) / float64(e-b-1)
		}
		col := mix(top, bottom, t)
		for x := a; x < d; x++ {
			c.img.SetRGBA(x, y, col)
		}
	}
}

// hgrad fills a rectangle with a horizontal gradient from left to right.
func (c *canvas) hgrad(x0, y0, x1, y1 float64, left, right color.RGBA) {
	a, b := c.px(x0, y0)
	d, e := c.px(x1, y1)
	for x := a; x < d; x++ {
		t := 0.0
		if d-a > 1 {
			t = float64(x-a) / float64(d-a-1)
		}
		col := mix(left, right, t)
		for y := b; y < e; y++ {
			c.img.SetRGBA(x, y, col)
		}
	}
}

func mix(a, b color.RGBA, t float64) color.RGBA {
	l := func(x, y uint8) uint8 { return uint8(math.Round(float64(x)*(1-t) + float64(y)*t)) }
	return color.RGBA{l(a.R, b.R), l(a.G, b.G), l(a.B, b.B), 255}
}

// ellipse fills an ellipse centred at (cx,cy) with radii rx (fraction of
// width) and ry (fraction of height).
func (c *canvas) ellipse(cx, cy, rx, ry float64, col color.RGBA) {
	pcx, pcy, prx, pry := cx*c.w, cy*c.h, rx*c.w, ry*c.h
	if prx <= 0 || pry <= 0 {
		return
	}
	for y := int(pcy - pry); y <= int(pcy+pry)+1; y++ {
		for x := int(pcx - prx); x <= int(pcx+prx)+1; x++ {
			dx, dy := (float64(x)+0.5-pcx)/prx, (float64(y)+0.5-pcy)/pry
			if dx*dx+dy*dy <= 1 && image.Pt(x, y).In(c.img.Rect) {
				c.img.SetRGBA(x, y, col)
			}
		}
	}
}

// circle fills a circle of radius r, a fraction of the width.
func (c *canvas) circle(cx, cy, r float64, col color.RGBA) {
	c.ellipse(cx, cy, r, r*c.w/c.h, col)
}

// poly fills a polygon given as fractional (x,y) pairs (even-odd rule).
func (c *canvas) poly(col color.RGBA, pts ...float64) {
	n := len(pts) / 2
	minY, maxY := math.Inf(1), math.Inf(-1)
	for i := 0; i < n; i++ {
		minY = math.Min(minY, pts[2*i+1]*c.h)
		maxY = math.Max(maxY, pts[2*i+1]*c.h)
	}
	for y := int(minY); y <= int(maxY); y++ {
		fy := float64(y) + 0.5
		var xs []float64
		for i := 0; i < n; i++ {
			x1, y1 := pts[2*i]*c.w, pts[2*i+1]*c.h
			j := (i + 1) % n
			x2, y2 := pts[2*j]*c.w, pts[2*j+1]*c.h
			if (y1 <= fy && y2 > fy) || (y2 <= fy && y1 > fy) {
				xs = append(xs, x1+(fy-y1)*(x2-x1)/(y2-y1))
			}
		}
		for k := 0; k+1 < len(xs); k += 2 {
			a, b := math.Min(xs[k], xs[k+1]), math.Max(xs[k], xs[k+1])
			for x := int(math.Round(a)); x < int(math.Round(b)); x++ {
				if image.Pt(x, y).In(c.img.Rect) {
					c.img.SetRGBA(x, y, col)
				}
			}
		}
	}
}

// figure draws a simple person: head over a torso, standing on baseY, h
// tall (fractions of height), centred on cx.
func (c *canvas) figure(cx, baseY, h float64, shirt, skin, hair color.RGBA) {
	head := h * 0.16
	hw := head * c.h / c.w // head radius as a fraction of width
	c.rect(cx-hw*1.7, baseY-h*0.66, cx+hw*1.7, baseY, shirt)
	c.ellipse(cx, baseY-h*0.66, hw*1.7, h*0.06, shirt) // shoulders
	c.rect(cx-hw*0.35, baseY-h*0.76, cx+hw*0.35, baseY-h*0.66, skin)
	c.ellipse(cx, baseY-h*0.84, hw, head, skin)
	c.ellipse(cx, baseY-h*0.93, hw*1.02, head*0.45, hair)
}

// text draws s centred in the box, as large as fits, optionally with an
// outline (the classic white-with-black-border meme caption).
func (c *canvas) text(x0, y0, x1, y1 float64, s string, fill color.RGBA, outline *color.RGBA) {
	drawText(c.r, c.img, image.Rect(int(x0*c.w), int(y0*c.h), int(x1*c.w), int(y1*c.h)), s, fill, outline)
}

// drawText draws s centred in box on dst, as large as fits.
func drawText(r *Renderer, dst draw.Image, box image.Rectangle, s string, fill color.RGBA, outline *color.RGBA) {
	drawTextWith(r.face, dst, box, s, fill, outline, false)
}

// drawTextWith draws s in box on dst, as large as fits, in the faces face
// returns: centred, or from the box's left edge.
func drawTextWith(faceOf func(px int) font.Face, dst draw.Image, box image.Rectangle, s string, fill color.RGBA, outline *color.RGBA, left bool) {
	if box.Dx() < 4 || box.Dy() < 4 || s == "" {
		return
	}
	size := int(float64(box.Dy()) * 0.8)
	var face font.Face
	var width fixed.Int26_6
	for ; size >= 6; size = size * 9 / 10 {
		face = faceOf(size)
		width = font.MeasureString(face, s)
		if width.Ceil() <= box.Dx()*92/100 {
			break
		}
	}
	if size < 6 {
		size = 6
		face = faceOf(size)
		width = font.MeasureString(face, s)
	}
	m := face.Metrics()
	capH := m.Ascent.Ceil() * 72 / 100
	x := box.Min.X + (box.Dx()-width.Ceil())/2
	if left {
		x = box.Min.X + box.Dx()*4/100
	}
	y := box.Min.Y + (box.Dy()+capH)/2
	if outline != nil {
		o := max(1, size/14)
		d := font.Drawer{Dst: dst, Src: image.NewUniform(*outline), Face: face}
		for dy := -o; dy <= o; dy += o {
			for dx := -o; dx <= o; dx += o {
				d.Dot = fixed.P(x+dx, y+dy)
				d.DrawString(s)
			}
		}
	}
	d := font.Drawer{Dst: dst, Src: image.NewUniform(fill), Face: face, Dot: fixed.P(x, y)}
	d.DrawString(s)
}
