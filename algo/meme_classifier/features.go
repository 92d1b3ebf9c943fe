package memeclassifier

import (
	"image"
	"math"
	"math/bits"
	"sort"

	"github.com/pnpworker/pnpworker/internal/imagefetch"
)

// Feature geometry. An image is first reduced to a grid×grid RGB thumbnail
// (one pass over the pixels, box filter); every window and feature below
// is computed from that thumbnail.
const (
	grid       = 64 // thumbnail side, in samples
	lumaSide   = 16 // luminance layout: 16×16 cells
	chromaSide = 8  // colour layout: 8×8 cells, two opponent channels
	dctSide    = 32 // the DCT hash is computed on 32×32 luminance
	lumaLen    = lumaSide * lumaSide
	chromaLen  = 2 * chromaSide * chromaSide
)

// descriptor is what the index stores per template and what a query
// computes per window: normalised luminance and colour layouts plus the
// aspect ratio for the fine comparison, and a 512-bit signature of the
// same layouts (signs of the luminance cells, three-level colour cells)
// whose Hamming distance drives the coarse search.
type descriptor struct {
	sig    [8]uint64
	aspect float32 // ln(width/height) of the window, in pixels
	luma   [lumaLen]float32
	chroma [chromaLen]float32
}

// chromaDead is the colour cell value below which a cell counts as grey in
// the signature.
const chromaDead = 0.04

// window is a horizontal band of the query: top and bottom are the
// fractions of the height cut off. Windows let a template be found inside
// an image that added caption bands above or below it.
type window struct{ top, bottom float32 }

// Band windows: for every total cut in bandSums, the cut all at the top,
// all at the bottom, or split evenly — where meme generators put captions.
// Steps of 0.06 keep the misalignment under 3% of the height; at most half
// the picture is cut.
var bandSums = [...]float32{0.06, 0.12, 0.18, 0.24, 0.30, 0.36, 0.42, 0.48}

// windows lists the full image first, then the band windows.
func windows() []window {
	ws := []window{{0, 0}}
	for _, s := range bandSums {
		ws = append(ws, window{s, 0}, window{0, s}, window{s / 2, s / 2})
	}
	return ws
}

// thumb is the grid×grid working image of one picture.
type thumb struct {
	r, g, b, y []float32
	aspect     float32 // ln(width/height) of the whole picture
}

func newThumb(img image.Image) *thumb {
	t := imagefetch.Shrink(img, grid, grid)
	b := img.Bounds()
	th := &thumb{r: t.R, g: t.G, b: t.B, y: t.Luma(), aspect: float32(math.Log(float64(b.Dx()) / float64(b.Dy())))}
	return th
}

// describe computes the descriptor of window w of the thumbnail.
func (t *thumb) describe(w window, s *scratch) descriptor {
	var d descriptor
	y0, y1 := w.top*grid, (1-w.bottom)*grid
	d.aspect = t.aspect - float32(math.Log(float64(1-w.top-w.bottom)))
	r, g, b := s.c[0][:], s.c[1][:], s.c[2][:]
	resample(t.r, y0, y1, lumaSide, r, s)
	resample(t.g, y0, y1, lumaSide, g, s)
	resample(t.b, y0, y1, lumaSide, b, s)

	// Luminance layout, zero mean and unit variance: invariant to
	// brightness and contrast changes.
	for i := range d.luma {
		d.luma[i] = 0.299*r[i] + 0.587*g[i] + 0.114*b[i]
	}
	normalise(d.luma[:])

	// Colour layout at half the resolution: two opponent channels divided
	// by intensity, so that a brightness gain leaves them (nearly)
	// unchanged.
	const n = chromaSide * chromaSide
	for j := 0; j < chromaSide; j++ {
		for i := 0; i < chromaSide; i++ {
			k := 2*j*lumaSide + 2*i
			cr := r[k] + r[k+1] + r[k+lumaSide] + r[k+lumaSide+1]
			cg := g[k] + g[k+1] + g[k+lumaSide] + g[k+lumaSide+1]
			cb := b[k] + b[k+1] + b[k+lumaSide] + b[k+lumaSide+1]
			sum := cr + cg + cb + 4*0.15
			d.chroma[j*chromaSide+i] = (cr - cg) / sum
			d.chroma[n+j*chromaSide+i] = (cr + cg - 2*cb) / sum
		}
	}

	for i, v := range d.luma {
		if v > 0 {
			d.sig[i/64] |= 1 << uint(i%64)
		}
	}
	for i, v := range d.chroma {
		if v > chromaDead {
			d.sig[4+i/64] |= 1 << uint(i%64)
		} else if v < -chromaDead {
			d.sig[6+i/64] |= 1 << uint(i%64)
		}
	}
	return d
}

// hash computes the 64-bit DCT perceptual hash of window w: the signs of
// 64 low-frequency coefficients of the 32×32 luminance against their
// median, the pHash construction.
func (t *thumb) hash(w window, s *scratch) uint64 {
	resample(t.y, w.top*grid, (1-w.bottom)*grid, dctSide, s.dct[:], s)
	return dctHash(s.dct[:], s)
}

// scratch holds per-query buffers so describing 30 windows allocates
// nothing. Not shared between goroutines.
type scratch struct {
	col [grid * dctSide]float32
	c   [3][lumaLen]float32
	dct [dctSide * dctSide]float32
	tmp [dctSide * 9]float64
	co  [64]float64
	med [64]float64
}

// resample averages rows [y0,y1) (fractional) of a grid×grid plane into an
// n×n output: area-weighted vertically, a plain box horizontally (grid is
// a multiple of n).
func resample(p []float32, y0, y1 float32, n int, out []float32, s *scratch) {
	// Vertical: column-wise, out row j covers [y0+j*h, y0+(j+1)*h).
	h := (y1 - y0) / float32(n)
	col := s.col[:grid*n]
	for j := 0; j < n; j++ {
		a, b := y0+float32(j)*h, y0+float32(j+1)*h
		row := col[j*grid : (j+1)*grid]
		clear(row)
		for y := int(a); y < grid && float32(y) < b; y++ {
			w := min(b, float32(y+1)) - max(a, float32(y))
			if w <= 0 {
				continue
			}
			src := p[y*grid : (y+1)*grid]
			for x := range row {
				row[x] += w * src[x]
			}
		}
		for x := range row {
			row[x] /= h
		}
	}
	// Horizontal box.
	k := grid / n
	for j := 0; j < n; j++ {
		row := col[j*grid : (j+1)*grid]
		for i := 0; i < n; i++ {
			var sum float32
			for _, v := range row[i*k : (i+1)*k] {
				sum += v
			}
			out[j*n+i] = sum / float32(k)
		}
	}
}

// normalise makes v zero-mean and unit-variance (all zeros when flat).
func normalise(v []float32) {
	var mean float64
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	var ss float64
	for _, x := range v {
		d := float64(x) - mean
		ss += d * d
	}
	// The floor keeps nearly flat pictures (noise averages out to one)
	// from being stretched into a strong random layout.
	sd := max(math.Sqrt(ss/float64(len(v))), 0.04)
	for i, x := range v {
		v[i] = float32((float64(x) - mean) / sd)
	}
}

// dctBasis[u][x] = cos((2x+1)uπ/2N) for the 9 lowest frequencies.
var dctBasis = func() (b [9][dctSide]float64) {
	for u := range b {
		for x := range b[u] {
			b[u][x] = math.Cos(float64(2*x+1) * float64(u) * math.Pi / (2 * dctSide))
		}
	}
	return b
}()

// hashCoeffs are the 64 (u,v) frequencies the hash uses: the lowest by
// u+v, DC excluded (it only measures brightness).
var hashCoeffs = func() (c [64][2]int) {
	var all [][2]int
	for u := 0; u < 9; u++ {
		for v := 0; v < 9; v++ {
			if u+v > 0 {
				all = append(all, [2]int{u, v})
			}
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		si, sj := all[i][0]+all[i][1], all[j][0]+all[j][1]
		if si != sj {
			return si < sj
		}
		return all[i][0] < all[j][0]
	})
	copy(c[:], all)
	return c
}()

// dctHash computes the 64-bit DCT hash of a dctSide×dctSide plane.
func dctHash(p []float32, s *scratch) uint64 {
	// Rows: tmp[y][v] = Σx p[y][x]·basis[v][x].
	for y := 0; y < dctSide; y++ {
		row := p[y*dctSide : (y+1)*dctSide]
		for v := 0; v < 9; v++ {
			var sum float64
			for x, px := range row {
				sum += float64(px) * dctBasis[v][x]
			}
			s.tmp[y*9+v] = sum
		}
	}
	for i, uv := range hashCoeffs {
		var sum float64
		for y := 0; y < dctSide; y++ {
			sum += s.tmp[y*9+uv[1]] * dctBasis[uv[0]][y]
		}
		s.co[i] = sum
	}
	copy(s.med[:], s.co[:])
	sort.Float64s(s.med[:])
	median := (s.med[31] + s.med[32]) / 2
	var h uint64
	for i, c := range s.co {
		if c > median {
			h |= 1 << uint(i)
		}
	}
	return h
}

func hamming(a, b uint64) int { return bits.OnesCount64(a ^ b) }

func sigDistance(a, b *[8]uint64) int {
	return bits.OnesCount64(a[0]^b[0]) + bits.OnesCount64(a[1]^b[1]) + bits.OnesCount64(a[2]^b[2]) + bits.OnesCount64(a[3]^b[3]) +
		bits.OnesCount64(a[4]^b[4]) + bits.OnesCount64(a[5]^b[5]) + bits.OnesCount64(a[6]^b[6]) + bits.OnesCount64(a[7]^b[7])
}
