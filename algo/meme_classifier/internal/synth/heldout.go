package synth

// The held-out suite. The classifier's features, windows, weights and its
// decision distance were tuned on Variants, Samples and the unrelated
// pictures of TestUnrelated. Everything in this file exists only to measure
// it afterwards, on what tuning never saw: other transformation kinds,
// other parameters, other fonts, other kinds of unrelated pictures, and
// seeds from a range no other code draws from. Tuning must never look at
// it: a change made to pass it would turn it into a second tuning set.

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
	"math/rand/v2"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/goitalic"
	"golang.org/x/image/font/gofont/gomedium"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
)

// HeldOutSeed is the base of every seed the held-out suite uses. Tuning
// pictures use seeds under 20 000; these are above 2^62.
const HeldOutSeed uint64 = 0x48454c444f555400 // "HELDOUT\x00"

// HeldOutReps is how many differently parameterised copies of each
// template every held-out kind makes.
const HeldOutReps = 2

// Font is one of the Go fonts other than the Go Bold every tuning caption
// is written in.
type Font string

// The held-out fonts.
const (
	FontRegular Font = "regular"
	FontMedium  Font = "medium"
	FontItalic  Font = "italic"
	FontMono    Font = "mono"
)

var heldOutFonts = []Font{FontRegular, FontMedium, FontItalic, FontMono}

type fontSize struct {
	f  Font
	px int
}

// faceOf returns a face cache for font f.
func (r *Renderer) faceOf(f Font) func(px int) font.Face {
	return func(px int) font.Face {
		if r.fontFaces == nil {
			r.fontFaces = map[fontSize]font.Face{}
			r.fonts = map[Font]*opentype.Font{}
		}
		if face, ok := r.fontFaces[fontSize{f, px}]; ok {
			return face
		}
		parsed, ok := r.fonts[f]
		if !ok {
			ttf := map[Font][]byte{FontRegular: goregular.TTF, FontMedium: gomedium.TTF, FontItalic: goitalic.TTF, FontMono: gomono.TTF}[f]
			var err error
			if parsed, err = opentype.Parse(ttf); err != nil {
				panic(fmt.Sprintf("synth: parse font %s: %v", f, err)) // embedded fonts parse
			}
			r.fonts[f] = parsed
		}
		face, err := opentype.NewFace(parsed, &opentype.FaceOptions{Size: float64(px), DPI: 72, Hinting: font.HintingNone})
		if err != nil {
			panic(fmt.Sprintf("synth: face %s %dpx: %v", f, px, err))
		}
		r.fontFaces[fontSize{f, px}] = face
		return face
	}
}

// Rand returns the deterministic generator of seed.
func Rand(seed uint64) *rand.Rand { return rng(seed) }

// HeldOutQuerySeed is the seed of the rep-th copy of template number
// template made by held-out kind number kind.
func HeldOutQuerySeed(kind, template, rep int) uint64 {
	return HeldOutSeed + uint64(kind)<<24 + uint64(template)<<8 + uint64(rep)
}

// HeldOutKind is one held-out transformation. Make draws its parameters
// from g and describes them in params.
type HeldOutKind struct {
	Name string
	Make func(r *Renderer, g *rand.Rand, src image.Image) (img image.Image, params string, err error)
}

// HeldOutKinds are the held-out transformations: JPEG re-encoding chains,
// thumbnails, borders, colour shifts, text in other fonts and places,
// caption bands in other fonts and styles, screenshots of posts and
// screenshots of those, and a combination.
func HeldOutKinds() []HeldOutKind {
	return []HeldOutKind{
		{"jpeg_chain", func(_ *Renderer, g *rand.Rand, s image.Image) (image.Image, string, error) {
			return jpegChain(g, s, 3+g.IntN(3))
		}},
		{"thumbnail", func(_ *Renderer, g *rand.Rand, s image.Image) (image.Image, string, error) {
			img, p := thumbnail(g, s)
			q := 50 + g.IntN(36)
			_, out, err := JPEG(img, q)
			return out, fmt.Sprintf("%s q%d", p, q), err
		}},
		{"border", func(_ *Renderer, g *rand.Rand, s image.Image) (image.Image, string, error) {
			img, p := border(g, s)
			return img, p, nil
		}},
		{"colour_shift", func(_ *Renderer, g *rand.Rand, s image.Image) (image.Image, string, error) {
			img, p := colourShift(g, s)
			return img, p, nil
		}},
		{"text_font", func(r *Renderer, g *rand.Rand, s image.Image) (image.Image, string, error) {
			img, p := r.textFont(g, s)
			return img, p, nil
		}},
		{"caption_font", func(r *Renderer, g *rand.Rand, s image.Image) (image.Image, string, error) {
			img, p := r.captionFont(g, s)
			return img, p, nil
		}},
		{"screenshot", func(r *Renderer, g *rand.Rand, s image.Image) (image.Image, string, error) {
			img, p := r.screenshot(g, s)
			q := 60 + g.IntN(26)
			_, out, err := JPEG(img, q)
			return out, fmt.Sprintf("%s q%d", p, q), err
		}},
		{"screenshot_of_screenshot", func(r *Renderer, g *rand.Rand, s image.Image) (image.Image, string, error) {
			img, p1 := r.screenshot(g, s)
			q1 := 60 + g.IntN(26)
			_, img1, err := JPEG(img, q1)
			if err != nil {
				return nil, "", err
			}
			img2, p2 := r.screenshot(g, img1)
			q2 := 60 + g.IntN(26)
			_, out, err := JPEG(img2, q2)
			return out, fmt.Sprintf("[%s q%d] in [%s q%d]", p1, q1, p2, q2), err
		}},
		{"combo", func(_ *Renderer, g *rand.Rand, s image.Image) (image.Image, string, error) {
			f := 0.35 + 0.25*g.Float64()
			img, p1 := colourShift(g, Scale(s, f))
			img, p2 := border(g, img)
			out, p3, err := jpegChain(g, img, 2)
			return out, fmt.Sprintf("scale %.2f, %s, %s, %s", f, p1, p2, p3), err
		}},
	}
}

// jpegChain re-encodes n times, each time after a slight downscale, the
// way a picture degrades as it is saved and shared again and again.
func jpegChain(g *rand.Rand, src image.Image, n int) (image.Image, string, error) {
	img := src
	p := fmt.Sprintf("%d passes:", n)
	for range n {
		f := 0.8 + 0.17*g.Float64()
		q := 30 + g.IntN(46)
		var err error
		if _, img, err = JPEG(Scale(img, f), q); err != nil {
			return nil, "", err
		}
		p += fmt.Sprintf(" ×%.2f q%d", f, q)
	}
	return img, p, nil
}

// thumbnail scales to a width of 64–160 pixels, with one of three filters.
func thumbnail(g *rand.Rand, src image.Image) (*image.RGBA, string) {
	b := src.Bounds()
	w := 64 + g.IntN(97)
	h := max(1, int(math.Round(float64(w)*float64(b.Dy())/float64(b.Dx()))))
	filters := []struct {
		name string
		k    xdraw.Interpolator
	}{{"nearest", xdraw.NearestNeighbor}, {"approx-bilinear", xdraw.ApproxBiLinear}, {"catmull-rom", xdraw.CatmullRom}}
	f := filters[g.IntN(len(filters))]
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	f.k.Scale(dst, dst.Bounds(), src, b, xdraw.Src, nil)
	return dst, fmt.Sprintf("thumbnail %dx%d %s", w, h, f.name)
}

// border pads each side by 3–12% of the picture's size in one colour.
func border(g *rand.Rand, src image.Image) (*image.RGBA, string) {
	b := src.Bounds()
	side := func(n int) int { return int(math.Round(float64(n) * (0.03 + 0.09*g.Float64()))) }
	l, r, t, bo := side(b.Dx()), side(b.Dx()), side(b.Dy()), side(b.Dy())
	var col color.RGBA
	switch g.IntN(4) {
	case 0:
		col = white
	case 1:
		col = black
	case 2:
		v := uint8(60 + g.IntN(160))
		col = color.RGBA{v, v, v, 255}
	default:
		col = randColor(g)
	}
	dst := image.NewRGBA(image.Rect(0, 0, b.Dx()+l+r, b.Dy()+t+bo))
	draw.Draw(dst, dst.Bounds(), image.NewUniform(col), image.Point{}, draw.Src)
	draw.Draw(dst, image.Rect(l, t, l+b.Dx(), t+b.Dy()), src, b.Min, draw.Src)
	return dst, fmt.Sprintf("border l%d r%d t%d b%d %v", l, r, t, bo, col)
}

// colourShift applies a gamma, a saturation change, and a gain and an
// offset per channel: a colour cast, not just a brightness change.
func colourShift(g *rand.Rand, src image.Image) (*image.RGBA, string) {
	gamma := 0.75 + 0.6*g.Float64()
	sat := 0.5 + 0.8*g.Float64()
	var gain, off [3]float64
	for k := range 3 {
		gain[k] = 0.75 + 0.5*g.Float64()
		off[k] = -20 + 40*g.Float64()
	}
	dst := toRGBA(src)
	var lut [256]float64
	for i := range lut {
		lut[i] = 255 * math.Pow(float64(i)/255, gamma)
	}
	for i := 0; i < len(dst.Pix); i += 4 {
		c := [3]float64{lut[dst.Pix[i]], lut[dst.Pix[i+1]], lut[dst.Pix[i+2]]}
		l := 0.299*c[0] + 0.587*c[1] + 0.114*c[2]
		for k := range 3 {
			dst.Pix[i+k] = clamp8((l+sat*(c[k]-l))*gain[k] + off[k])
		}
	}
	return dst, fmt.Sprintf("gamma %.2f sat %.2f gain %.2f/%.2f/%.2f offset %.0f/%.0f/%.0f",
		gamma, sat, gain[0], gain[1], gain[2], off[0], off[1], off[2])
}

// textFont writes one or two lines of text in another font, colour and
// place than the tuning overlays (which are white, outlined, bold, in the
// top and bottom fifth): anywhere between 20% and 75% of the height.
func (r *Renderer) textFont(g *rand.Rand, src image.Image) (*image.RGBA, string) {
	dst := toRGBA(src)
	w, h := dst.Bounds().Dx(), dst.Bounds().Dy()
	f := heldOutFonts[g.IntN(len(heldOutFonts))]
	styles := []struct {
		name    string
		fill    color.RGBA
		outline *color.RGBA
	}{
		{"yellow", hex("#ffe600"), nil},
		{"red", hex("#e02020"), nil},
		{"white", white, nil},
		{"black", black, nil},
		{"white-on-blue-outline", white, &color.RGBA{20, 40, 160, 255}},
	}
	st := styles[g.IntN(len(styles))]
	n := 1 + g.IntN(2)
	p := fmt.Sprintf("%s %s", f, st.name)
	for range n {
		bh := 0.08 + 0.08*g.Float64()
		y0 := 0.2 + (0.55-bh)*g.Float64()
		left := g.IntN(2) == 0
		box := image.Rect(0, int(y0*float64(h)), w, int((y0+bh)*float64(h)))
		drawTextWith(r.faceOf(f), dst, box, randWords(g, 2+g.IntN(3)), st.fill, st.outline, left)
		p += fmt.Sprintf(" at %.2f+%.2f left=%v", y0, bh, left)
	}
	return dst, p
}

// captionFont adds caption bands in another font: white or black bands,
// 8–30% of the height, on top, at the bottom, or both.
func (r *Renderer) captionFont(g *rand.Rand, src image.Image) (*image.RGBA, string) {
	b := src.Bounds()
	f := heldOutFonts[g.IntN(len(heldOutFonts))]
	bg, fg, style := white, black, "white band"
	if g.IntN(2) == 0 {
		bg, fg, style = black, white, "black band"
	}
	frac := func() float64 { return 0.08 + 0.22*g.Float64() }
	var th, bh int
	switch g.IntN(3) {
	case 0:
		th = int(math.Round(float64(b.Dy()) * frac()))
	case 1:
		bh = int(math.Round(float64(b.Dy()) * frac()))
	default:
		th = int(math.Round(float64(b.Dy()) * frac()))
		bh = int(math.Round(float64(b.Dy()) * frac()))
	}
	dst := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()+th+bh))
	draw.Draw(dst, dst.Bounds(), image.NewUniform(bg), image.Point{}, draw.Src)
	draw.Draw(dst, image.Rect(0, th, b.Dx(), th+b.Dy()), src, b.Min, draw.Src)
	if th > 0 {
		drawTextWith(r.faceOf(f), dst, image.Rect(0, 0, b.Dx(), th), randWords(g, 3+g.IntN(3)), fg, nil, false)
	}
	if bh > 0 {
		drawTextWith(r.faceOf(f), dst, image.Rect(0, th+b.Dy(), b.Dx(), th+b.Dy()+bh), randWords(g, 3+g.IntN(3)), fg, nil, false)
	}
	return dst, fmt.Sprintf("%s %s top %.2f bottom %.2f", f, style, float64(th)/float64(b.Dy()), float64(bh)/float64(b.Dy()))
}

// screenshot pastes src into a social-media-post-like page: a coloured
// header bar, an avatar and a name, a line or two of text, the picture at
// 65–90% of the page width, and an action bar and comments below, in a
// light or a dark theme.
func (r *Renderer) screenshot(g *rand.Rand, src image.Image) (*image.RGBA, string) {
	b := src.Bounds()
	pw := int(float64(b.Dx()) * (1.1 + 0.4*g.Float64()))
	iw := int(float64(pw) * (0.65 + 0.25*g.Float64()))
	ih := max(1, iw*b.Dy()/b.Dx())
	unit := max(8, pw/20)
	header, lines, below := 2*unit, 1+g.IntN(2), 2*unit+g.IntN(3)*unit
	top := header + unit/2 + lines*unit + unit/2
	ph := top + ih + below
	bg, fg, bar := white, hex("#14171a"), hex("#1d9bf0")
	theme := "light"
	if g.IntN(2) == 0 {
		bg, fg, bar, theme = hex("#15202b"), hex("#e7e9ea"), hex("#253341"), "dark"
	}
	if g.IntN(3) == 0 {
		bar = randColor(g)
	}
	c := r.newCanvas(pw, ph, bg)
	fill := func(x0, y0, x1, y1 int, col color.RGBA) {
		draw.Draw(c.img, image.Rect(x0, y0, x1, y1), image.NewUniform(col), image.Point{}, draw.Src)
	}
	fill(0, 0, pw, header, bar)
	face := r.faceOf(heldOutFonts[g.IntN(len(heldOutFonts))])
	drawTextWith(face, c.img, image.Rect(unit, unit/3, pw/2, header-unit/3), randWords(g, 1+g.IntN(2)), white, nil, true)
	c.circle(float64(unit)/float64(pw), (float64(header)+float64(unit)*0.9)/float64(ph), 0.6*float64(unit)/float64(pw), randColor(g))
	for i := range lines {
		y := header + unit/2 + i*unit
		drawTextWith(face, c.img, image.Rect(2*unit, y, pw-unit, y+unit*8/10), randWords(g, 4+g.IntN(4)), fg, nil, true)
	}
	x := (pw - iw) / 2
	if g.IntN(2) == 0 {
		x = min(2*unit, pw-iw) // flush with the text column
	}
	xdraw.BiLinear.Scale(c.img, image.Rect(x, top, x+iw, top+ih), src, b, xdraw.Src, nil)
	y := top + ih + unit/3
	for i := range 4 {
		cx := (float64(unit) + float64(i)*float64(pw)/4) / float64(pw)
		c.circle(cx, (float64(y)+float64(unit)/2)/float64(ph), 0.25*float64(unit)/float64(pw), fg)
	}
	for y += unit + unit/3; y+unit <= ph; y += unit {
		drawTextWith(face, c.img, image.Rect(unit, y, pw-unit, y+unit*7/10), randWords(g, 3+g.IntN(5)), fg, nil, true)
	}
	return c.img, fmt.Sprintf("%s page %dx%d, picture %dx%d at (%d,%d)", theme, pw, ph, iw, ih, x, top)
}

// Named is a picture with a name.
type Named struct {
	Name  string
	Image image.Image
}

// HeldOutUnrelated are pictures made from no template, none of them seen
// in tuning: random layouts and photo-like pictures from held-out seeds,
// charts, patterns, screenshots of posts with a photo, text pages in other
// fonts, and held-out transformations of layouts and photos.
func (r *Renderer) HeldOutUnrelated() ([]Named, error) {
	var out []Named
	seed := func(kind, i int) uint64 { return HeldOutSeed + 1<<40 + uint64(kind)<<24 + uint64(i) }
	for i := range 16 {
		out = append(out, Named{fmt.Sprint("layout/", i), r.Layout(seed(0, i), 300+20*(i%6))})
	}
	for i := range 8 {
		out = append(out, Named{fmt.Sprint("photo/", i), Photo(seed(1, i), 360+10*i, 280)})
	}
	for i := range 8 {
		out = append(out, Named{fmt.Sprint("chart/", i), r.chart(rng(seed(2, i)))})
	}
	for i := range 8 {
		out = append(out, Named{fmt.Sprint("pattern/", i), pattern(rng(seed(3, i)))})
	}
	for i := range 8 {
		g := rng(seed(4, i))
		img, _ := r.screenshot(g, Photo(seed(4, 1000+i), 400, 300))
		out = append(out, Named{fmt.Sprint("post/", i), img})
	}
	for i := range 8 {
		out = append(out, Named{fmt.Sprint("text_font/", i), r.textPageFont(rng(seed(5, i)))})
	}
	kinds := HeldOutKinds()
	for i := range 16 {
		var src image.Image = Photo(seed(6, i), 400, 300)
		if i%2 == 0 {
			src = r.Layout(seed(6, i), 400)
		}
		k := kinds[i%len(kinds)]
		img, _, err := k.Make(r, rng(seed(7, i)), src)
		if err != nil {
			return nil, err
		}
		out = append(out, Named{fmt.Sprintf("transformed/%d_%s", i, k.Name), img})
	}
	return out, nil
}

// chart draws a bar or line chart with axes, gridlines and a title.
func (r *Renderer) chart(g *rand.Rand) *image.RGBA {
	w, h := 360+20*g.IntN(5), 260+20*g.IntN(4)
	c := r.newCanvas(w, h, white)
	if g.IntN(3) == 0 {
		c = r.newCanvas(w, h, hex("#f4f1ea"))
	}
	face := r.faceOf(heldOutFonts[g.IntN(len(heldOutFonts))])
	drawTextWith(face, c.img, image.Rect(0, 0, w, h/10), randWords(g, 3), black, nil, false)
	x0, y0, x1, y1 := 0.12, 0.14, 0.96, 0.88
	for i := 0; i <= 4; i++ {
		y := y0 + (y1-y0)*float64(i)/4
		c.rect(x0, y, x1, y+0.003, hex("#cccccc"))
	}
	c.rect(x0, y0, x0+0.004, y1, black)
	c.rect(x0, y1, x1, y1+0.005, black)
	n := 4 + g.IntN(8)
	col := randColor(g)
	if g.IntN(2) == 0 {
		for i := range n {
			bw := (x1 - x0) / float64(n)
			v := 0.1 + 0.9*g.Float64()
			c.rect(x0+bw*(float64(i)+0.15), y1-(y1-y0)*v, x0+bw*(float64(i)+0.85), y1, col)
		}
	} else {
		prev := 0.2 + 0.6*g.Float64()
		for i := 1; i < n; i++ {
			v := math.Min(0.95, math.Max(0.05, prev+0.3*(g.Float64()-0.5)))
			for s := 0.0; s <= 1; s += 0.02 {
				x := x0 + (x1-x0)*(float64(i-1)+s)/float64(n-1)
				y := y1 - (y1-y0)*(prev+(v-prev)*s)
				c.circle(x, y, 0.006, col)
			}
			prev = v
		}
	}
	return c.img
}

// pattern draws stripes, a checkerboard or concentric rings.
func pattern(g *rand.Rand) *image.RGBA {
	w, h := 300+20*g.IntN(6), 240+20*g.IntN(6)
	a, b := randColor(g), randColor(g)
	kind := g.IntN(3)
	period := 8 + g.IntN(40)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	cx, cy := g.Float64()*float64(w), g.Float64()*float64(h)
	for y := range h {
		for x := range w {
			var on bool
			switch kind {
			case 0:
				on = ((x+y)/period)%2 == 0
			case 1:
				on = (x/period+y/period)%2 == 0
			default:
				on = int(math.Hypot(float64(x)-cx, float64(y)-cy))/period%2 == 0
			}
			if on {
				img.SetRGBA(x, y, a)
			} else {
				img.SetRGBA(x, y, b)
			}
		}
	}
	return img
}

// textPageFont is a page of text lines in a held-out font, light or dark.
func (r *Renderer) textPageFont(g *rand.Rand) *image.RGBA {
	w, h := 360+20*g.IntN(5), 260+20*g.IntN(5)
	bg, fg := white, black
	if g.IntN(2) == 0 {
		bg, fg = hex("#1e1e1e"), hex("#d4d4d4")
	}
	c := r.newCanvas(w, h, bg)
	face := r.faceOf(heldOutFonts[g.IntN(len(heldOutFonts))])
	lines := 5 + g.IntN(8)
	lh := h * 9 / 10 / lines
	for i := range lines {
		y := h/20 + i*lh
		drawTextWith(face, c.img, image.Rect(0, y, w/3+g.IntN(2*w/3), y+lh*3/4), randWords(g, 3+g.IntN(5)), fg, nil, true)
	}
	return c.img
}
