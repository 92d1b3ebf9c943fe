package memeclassifier

import (
	"image"
	"math"
	"sort"
)

// Matching parameters. They were tuned on the demo gallery's variant suite
// (see accuracy_test.go) and are documented in README.md.
const (
	tauLuma    = 1.5  // truncation of a luminance cell difference, in standard deviations
	tauChroma  = 0.25 // truncation of a colour cell difference
	weightLuma = 0.6  // share of luminance in the distance; colour has the rest
	aspectFree = 0.06 // |ln aspect ratio| difference tolerated without penalty (~6%)
	aspectCost = 0.75 // penalty per unit of ln aspect ratio beyond aspectFree
	aspectGate = 0.10 // band windows are compared only with templates this close in ln aspect ratio
	coarseFull = 24   // candidates kept by signature distance for the full image
	coarseBand = 6    // candidates kept by signature distance per band window
	refineTop  = 8    // best candidates compared with every compatible window
)

// Template is one gallery image as indexed.
type Template struct {
	// Label is what the classifier answers when this template matches.
	Label string
	// ID names the template within the gallery, e.g. "drake_pref.png" or
	// "drake_pref/original.jpg".
	ID string
	// Width and Height are the template's size in pixels.
	Width, Height int
	// Hash is the template's 64-bit DCT perceptual hash.
	Hash uint64
	desc descriptor
	pos  int // position in Index.templates
}

// Index is an in-memory nearest-template index, built by NewIndex or
// LoadIndex. It is immutable and safe for concurrent searches.
type Index struct {
	// templates sorted by aspect ratio, so band windows scan only the
	// templates whose shape they could be.
	templates []Template
	aspects   []float32
	sigs      [][8]uint64 // templates[i].desc.sig, contiguous for the coarse scan
	labels    int
}

// NewIndex indexes in-memory pictures. It computes every descriptor; the
// images are not kept. LoadIndex indexes a gallery folder.
func NewIndex(items []IndexItem) *Index {
	templates := make([]Template, len(items))
	var s scratch
	for i, it := range items {
		templates[i] = describeTemplate(it.Label, it.ID, it.Image, &s)
	}
	return buildIndex(templates)
}

func describeTemplate(label, id string, img image.Image, s *scratch) Template {
	th := newThumb(img)
	b := img.Bounds()
	return Template{
		Label: label, ID: id, Width: b.Dx(), Height: b.Dy(),
		Hash: th.hash(window{}, s),
		desc: th.describe(window{}, s),
	}
}

// buildIndex orders templates by aspect ratio and lays out the coarse
// search arrays.
func buildIndex(templates []Template) *Index {
	ix := &Index{}
	seen := map[string]bool{}
	for _, t := range templates {
		seen[t.Label] = true
	}
	ix.labels = len(seen)
	order := make([]int, len(templates))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool {
		return templates[order[i]].desc.aspect < templates[order[j]].desc.aspect
	})
	ix.templates = make([]Template, len(order))
	ix.aspects = make([]float32, len(order))
	ix.sigs = make([][8]uint64, len(order))
	for i, o := range order {
		ix.templates[i] = templates[o]
		ix.templates[i].pos = i
		ix.aspects[i] = ix.templates[i].desc.aspect
		ix.sigs[i] = ix.templates[i].desc.sig
	}
	return ix
}

// IndexItem is one template to index.
type IndexItem struct {
	Label string
	ID    string
	Image image.Image
}

// Len is the number of templates.
func (ix *Index) Len() int { return len(ix.templates) }

// Labels is the number of distinct labels.
func (ix *Index) Labels() int { return ix.labels }

// Query is a picture prepared for searching: the descriptors of all its
// windows. Computing it is the per-image feature cost.
type Query struct {
	th    *thumb
	wins  []window
	descs []descriptor
}

// NewQuery computes the descriptors of img's windows.
func NewQuery(img image.Image) *Query {
	th := newThumb(img)
	ws := windows()
	q := &Query{th: th, wins: ws, descs: make([]descriptor, len(ws))}
	var s scratch
	for i, w := range ws {
		q.descs[i] = th.describe(w, &s)
	}
	return q
}

// Match is one template found for a query.
type Match struct {
	Template *Template
	// Distance is the layout distance of the best window: the mean
	// truncated difference of the luminance layout (weight 0.6) and of the
	// colour layout (0.4), plus an aspect ratio penalty. 0 is the same
	// picture; unrelated pictures are around 0.3 and more.
	Distance float64
	// Score maps Distance to [0,1]: 1 - Distance/(2·DecisionDistance),
	// clamped. 1 is the same picture, 0.5 the default decision boundary,
	// 0 anything at twice that distance or more.
	Score float64
	// HashDistance is the Hamming distance (0..64) between the DCT hashes
	// of the template and the best window.
	HashDistance int
	// Top and Bottom are the fractions of the query's height the best
	// window cut off (caption bands), 0 when the whole image matched.
	Top, Bottom float64
}

// Search returns the best match of up to n distinct labels, best first.
//
// Coarse stage: Hamming distance of the layout signatures, the whole
// picture against every template, each band window only against the
// templates of its aspect ratio; the nearest few of each window survive
// and are compared with it on the full layouts. Fine stage: the best
// survivors are compared with every window of compatible shape, and a
// template's distance is that of its best window.
func (ix *Index) Search(q *Query, n int) []Match {
	if len(ix.templates) == 0 || n <= 0 {
		return nil
	}
	var found []Match
	at := map[int]int{} // template index → position in found
	consider := func(i, wi int) {
		t := &ix.templates[i]
		dist := float64(distance(&q.descs[wi], &t.desc))
		p, ok := at[i]
		if !ok {
			at[i] = len(found)
			found = append(found, Match{Template: t, Distance: math.Inf(1)})
			p = len(found) - 1
		}
		if m := &found[p]; dist < m.Distance {
			m.Distance, m.Top, m.Bottom = dist, float64(q.wins[wi].top), float64(q.wins[wi].bottom)
		}
	}
	var top nearest
	for wi := range q.descs {
		d := &q.descs[wi]
		lo, hi, k := 0, len(ix.templates), coarseFull
		if wi > 0 {
			lo = sort.Search(len(ix.aspects), func(i int) bool { return ix.aspects[i] >= d.aspect-aspectGate })
			hi = sort.Search(len(ix.aspects), func(i int) bool { return ix.aspects[i] > d.aspect+aspectGate })
			k = coarseBand
		}
		top.reset(k)
		for i := lo; i < hi; i++ {
			top.offer(int32(i), sigDistance(&d.sig, &ix.sigs[i]))
		}
		for _, i := range top.idx[:top.n] {
			consider(int(i), wi)
		}
	}

	byDistance := func() {
		sort.Slice(found, func(i, j int) bool {
			if found[i].Distance != found[j].Distance {
				return found[i].Distance < found[j].Distance
			}
			return found[i].Template.ID < found[j].Template.ID
		})
		for p, m := range found {
			at[m.Template.pos] = p
		}
	}
	byDistance()
	refine := min(len(found), max(refineTop, 2*n))
	for _, m := range found[:refine] {
		i := m.Template.pos
		for wi := range q.descs {
			if wi == 0 || abs32(q.descs[wi].aspect-m.Template.desc.aspect) <= aspectGate {
				consider(i, wi)
			}
		}
	}
	byDistance()

	out := make([]Match, 0, n)
	seen := map[string]bool{}
	var s scratch
	for _, m := range found {
		if seen[m.Template.Label] {
			continue
		}
		seen[m.Template.Label] = true
		m.Score = scoreOf(m.Distance)
		m.HashDistance = hamming(q.th.hash(window{float32(m.Top), float32(m.Bottom)}, &s), m.Template.Hash)
		out = append(out, m)
		if len(out) == n {
			break
		}
	}
	return out
}

// nearest keeps the k smallest distances offered, unordered.
type nearest struct {
	n, k  int
	worst int // position of the largest kept distance
	idx   [coarseFull]int32
	dist  [coarseFull]int
}

func (t *nearest) reset(k int) { t.n, t.k, t.worst = 0, min(k, coarseFull), 0 }

func (t *nearest) offer(i int32, d int) {
	if t.n < t.k {
		t.idx[t.n], t.dist[t.n] = i, d
		if d > t.dist[t.worst] || t.n == 0 {
			t.worst = t.n
		}
		t.n++
		return
	}
	if d >= t.dist[t.worst] {
		return
	}
	t.idx[t.worst], t.dist[t.worst] = i, d
	for j := 0; j < t.n; j++ {
		if t.dist[j] > t.dist[t.worst] {
			t.worst = j
		}
	}
}

// DecisionDistance is the layout distance at which Score is 0.5, the
// default boundary between a template and "unknown". Variants of the demo
// templates (rescaled, re-encoded, cropped, captioned, rotated) stay under
// 0.19; unrelated pictures (photos, noise, text, other layouts) are above
// 0.29.
const DecisionDistance = 0.24

func scoreOf(d float64) float64 { return math.Max(0, math.Min(1, 1-d/(2*DecisionDistance))) }

// distance compares a query window with a template: 0 for the same
// picture, around 0.5 and more for unrelated ones. Cell differences are
// truncated so that a region hidden by overlaid text costs a bounded
// amount instead of dominating.
func distance(q, t *descriptor) float32 {
	var dl float32
	for i := range q.luma {
		dl += min(abs32(q.luma[i]-t.luma[i]), tauLuma)
	}
	dl /= lumaLen * tauLuma
	var dc float32
	for i := range q.chroma {
		dc += min(abs32(q.chroma[i]-t.chroma[i]), tauChroma)
	}
	dc /= chromaLen * tauChroma
	da := max(0, abs32(q.aspect-t.aspect)-aspectFree) * aspectCost
	return weightLuma*dl + (1-weightLuma)*dc + da
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}
