package memeclassifier

import (
	"fmt"
	"image"
	"image/color"
	"io/fs"
	"sort"
	"strings"
	"testing"

	"github.com/pnpworker/pnpworker/algo/meme_classifier/internal/synth"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
)

// MinAccuracy is the top-1 accuracy the variant suite must reach.
const MinAccuracy = 0.95

// demoTemplates decodes the committed demo gallery: the pictures the
// variants are made from are exactly the ones the classifier indexed.
func demoTemplates(t testing.TB) map[string]image.Image {
	t.Helper()
	out := map[string]image.Image{}
	err := fs.WalkDir(DemoGallery(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(DemoGallery(), p)
		if err != nil {
			return err
		}
		img, err := imagefetch.Decode(data, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		label, _ := LabelOf(p)
		out[label] = img.Image
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newDemoClassifier(t testing.TB) *Classifier {
	t.Helper()
	c, err := NewClassifier(Config{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAccuracy classifies variants of every demo template: downscaled to
// 50%, JPEG quality 40, 5% crops (corner and centre), caption bands on
// top, bottom and both, overlaid captions, brightness ±20%, ±3° rotations
// and a combination. A variant counts as correct when the label (not just
// the candidate) is its template's.
func TestAccuracy(t *testing.T) {
	c := newDemoClassifier(t)
	r, err := synth.NewRenderer()
	if err != nil {
		t.Fatal(err)
	}
	templates := demoTemplates(t)
	if len(templates) != len(synth.Names()) {
		t.Fatalf("gallery has %d templates, the generator draws %d", len(templates), len(synth.Names()))
	}
	labels := make([]string, 0, len(templates))
	for l := range templates {
		labels = append(labels, l)
	}
	sort.Strings(labels)

	type tally struct{ ok, n int }
	byVariant := map[string]*tally{}
	var variants []string
	total := tally{}
	minScore := 1.0
	for _, v := range synth.Variants() {
		variants = append(variants, v.Name)
		byVariant[v.Name] = &tally{}
		for _, label := range labels {
			img, err := v.Apply(r, templates[label])
			if err != nil {
				t.Fatal(err)
			}
			out := c.ClassifyImage(img)
			byVariant[v.Name].n++
			total.n++
			if out.Label == label {
				byVariant[v.Name].ok++
				total.ok++
				minScore = min(minScore, out.Score)
			} else {
				t.Logf("miss: %s/%s → %s (candidate %s, score %.3f)", label, v.Name, out.Label, out.Candidate, out.Score)
			}
		}
	}
	for _, v := range variants {
		t.Logf("%-15s %2d/%d", v, byVariant[v].ok, byVariant[v].n)
	}
	acc := float64(total.ok) / float64(total.n)
	t.Logf("top-1 accuracy: %d/%d = %.1f%% (%d templates × %d variants); lowest correct score %.3f",
		total.ok, total.n, 100*acc, len(labels), len(variants), minScore)
	if acc < MinAccuracy {
		t.Fatalf("top-1 accuracy %.1f%% is under %.0f%%", 100*acc, 100*MinAccuracy)
	}
}

// TestUnrelated checks that pictures made from no template are "unknown":
// noise, photo-like gradients, text, flat colours and random layouts of
// the same kind of shapes, panels and captions the templates use.
func TestUnrelated(t *testing.T) {
	c := newDemoClassifier(t)
	r, err := synth.NewRenderer()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]image.Image{}
	for s := uint64(1); s <= 5; s++ {
		cases[fmt.Sprint("noise/", s)] = synth.Noise(s, 320, 240)
		cases[fmt.Sprint("text/", s)] = r.TextPage(s, 400, 300)
	}
	for s := uint64(1); s <= 10; s++ {
		cases[fmt.Sprint("photo/", s)] = synth.Photo(s, 400, 300)
	}
	for s := uint64(1); s <= 40; s++ {
		cases[fmt.Sprint("layout/", s)] = r.Layout(1000+s, 400)
	}
	for i, col := range []color.RGBA{{255, 255, 255, 255}, {0, 0, 0, 255}, {240, 160, 40, 255}} {
		cases[fmt.Sprint("solid/", i)] = synth.Solid(col, 300, 300)
	}
	maxScore, maxName := 0.0, ""
	for name, img := range cases {
		out := c.ClassifyImage(img)
		if out.Score > maxScore {
			maxScore, maxName = out.Score, name
		}
		if out.Label != Unknown {
			t.Errorf("%s: label %s (score %.3f), want %s", name, out.Label, out.Score, Unknown)
		}
	}
	t.Logf("%d unrelated pictures, all %s; highest score %.3f (%s), decision boundary %.2f",
		len(cases), Unknown, maxScore, maxName, DefaultMinScore)
}

// TestSamples classifies the committed sample images, as `pnp up` serves
// them: the label is the file name's template prefix, or unknown.
func TestSamples(t *testing.T) {
	c := newDemoClassifier(t)
	entries, err := fs.ReadDir(DemoSamples(), ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("no samples")
	}
	labels := demoTemplates(t)
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			want := Unknown
			for l := range labels {
				if strings.HasPrefix(e.Name(), l+"_") {
					want = l
				}
			}
			data, err := fs.ReadFile(DemoSamples(), e.Name())
			if err != nil {
				t.Fatal(err)
			}
			img, err := imagefetch.Decode(data, 0)
			if err != nil {
				t.Fatal(err)
			}
			if out := c.ClassifyImage(img.Image); out.Label != want {
				t.Fatalf("label %s (candidate %s, score %.3f), want %s", out.Label, out.Candidate, out.Score, want)
			}
		})
	}
}

// TestDemoGalleryUpToDate redraws the templates and samples and compares
// them with the committed files: run `go generate ./algo/meme_classifier`
// after changing the drawings. Pixels are compared, not bytes, so a
// different encoder version does not matter; JPEG samples within a small
// tolerance.
func TestDemoGalleryUpToDate(t *testing.T) {
	r, err := synth.NewRenderer()
	if err != nil {
		t.Fatal(err)
	}
	committed := demoTemplates(t)
	drawn := map[string]image.Image{}
	for _, name := range synth.Names() {
		img, err := r.Template(name)
		if err != nil {
			t.Fatal(err)
		}
		drawn[name] = img
		if d := meanAbsDiff(img, committed[name]); d != 0 {
			t.Errorf("gallery/%s.png differs from the generator's drawing (mean diff %.3f); run go generate", name, d)
		}
	}
	for _, s := range synth.Samples() {
		data, err := fs.ReadFile(DemoSamples(), s.File)
		if err != nil {
			t.Errorf("samples/%s: %v; run go generate", s.File, err)
			continue
		}
		got, err := imagefetch.Decode(data, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, want, err := synth.JPEG(s.Make(r, drawn[s.Template]), s.Quality)
		if err != nil {
			t.Fatal(err)
		}
		if d := meanAbsDiff(got.Image, want); d > 1 {
			t.Errorf("samples/%s differs from the generator's output (mean diff %.3f); run go generate", s.File, d)
		}
	}
}

// meanAbsDiff is the mean absolute RGB difference (0..255) of two images,
// 255 when their sizes differ.
func meanAbsDiff(a, b image.Image) float64 {
	if b == nil || a.Bounds().Size() != b.Bounds().Size() {
		return 255
	}
	ab, bb := a.Bounds(), b.Bounds()
	var sum float64
	for y := 0; y < ab.Dy(); y++ {
		for x := 0; x < ab.Dx(); x++ {
			r1, g1, b1, _ := a.At(ab.Min.X+x, ab.Min.Y+y).RGBA()
			r2, g2, b2, _ := b.At(bb.Min.X+x, bb.Min.Y+y).RGBA()
			sum += absDiff(r1, r2) + absDiff(g1, g2) + absDiff(b1, b2)
		}
	}
	return sum / float64(3*ab.Dx()*ab.Dy()) / 257
}

func absDiff(a, b uint32) float64 {
	if a > b {
		return float64(a - b)
	}
	return float64(b - a)
}

// TestConcurrentClassify runs classifications in parallel on one
// Classifier; run with -race.
func TestConcurrentClassify(t *testing.T) {
	c := newDemoClassifier(t)
	templates := demoTemplates(t)
	errs := make(chan string, len(templates))
	for label, img := range templates {
		go func() {
			if out := c.ClassifyImage(img); out.Label != label {
				errs <- label + " → " + out.Label
				return
			}
			errs <- ""
		}()
	}
	for range templates {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
}
