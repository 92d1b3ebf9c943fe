package memeclassifier

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/algo/meme_classifier/internal/synth"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
)

// BenchmarkImage measures the per-image cost for a 500×500 JPEG (a demo
// template scaled up and re-encoded at quality 85), against the demo
// gallery: each step alone, then everything without the fetch, then
// everything with a fetch from a loopback HTTP server.
//
//	go test -run '^$' -bench BenchmarkImage ./algo/meme_classifier/
func BenchmarkImage(b *testing.B) {
	src := demoTemplates(b)["drake_pref"]
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, synth.Resize(src, 500, 500), &jpeg.Options{Quality: 85}); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		_, _ = w.Write(data)
	}))
	b.Cleanup(srv.Close)
	f, err := imagefetch.New(imagefetch.Config{Allow: []string{strings.TrimPrefix(srv.URL, "http://")}})
	if err != nil {
		b.Fatal(err)
	}
	c, err := NewClassifier(Config{Fetcher: f})
	if err != nil {
		b.Fatal(err)
	}
	d, err := imagefetch.Decode(data, 0)
	if err != nil {
		b.Fatal(err)
	}
	if out := c.ClassifyImage(d.Image); out.Label != "drake_pref" {
		b.Fatalf("benchmark image classified as %s", out.Label)
	}
	q := NewQuery(d.Image)
	b.Logf("500×500 JPEG, %d bytes; gallery of %d templates", len(data), c.Index().Len())

	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := imagefetch.Decode(data, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("features", func(b *testing.B) {
		for b.Loop() {
			NewQuery(d.Image)
		}
	})
	b.Run("search", func(b *testing.B) {
		for b.Loop() {
			c.Index().Search(q, 3)
		}
	})
	b.Run("fetch=excluded", func(b *testing.B) {
		for b.Loop() {
			d, err := imagefetch.Decode(data, 0)
			if err != nil {
				b.Fatal(err)
			}
			c.ClassifyImage(d.Image)
		}
	})
	b.Run("fetch=included", func(b *testing.B) {
		ctx := context.Background()
		in := Input{ImageURL: srv.URL + "/x.jpg"}
		for b.Loop() {
			if _, err := c.Classify(ctx, in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSearch measures the index search alone for galleries of 100,
// 1000 and 10000 templates: the 16 demo templates plus random layouts
// (panels, colour fields, figures, text bands) drawn by internal/synth.
// Queries cycle through the 208 variants of the accuracy suite; the top-1
// accuracy with that many distractors is logged.
//
//	go test -run '^$' -bench BenchmarkSearch ./algo/meme_classifier/
func BenchmarkSearch(b *testing.B) {
	r, err := synth.NewRenderer()
	if err != nil {
		b.Fatal(err)
	}
	demo := demoTemplates(b)
	var s scratch
	var all []Template
	var queries []*Query
	var want []string
	for _, name := range synth.Names() {
		all = append(all, describeTemplate(name, name+".png", demo[name], &s))
		for _, v := range synth.Variants() {
			img, err := v.Apply(r, demo[name])
			if err != nil {
				b.Fatal(err)
			}
			queries = append(queries, NewQuery(img))
			want = append(want, name)
		}
	}
	const maxSize = 10000
	start := time.Now()
	for i := len(all); i < maxSize; i++ {
		img := r.Layout(uint64(i), 160)
		all = append(all, describeTemplate(fmt.Sprint("layout_", i), fmt.Sprint("layouts/", i, ".png"), img, &s))
	}
	b.Logf("drew and described %d random layouts in %s", maxSize-len(demo), time.Since(start).Round(time.Millisecond))

	for _, size := range []int{100, 1000, 10000} {
		ix := buildIndex(append([]Template(nil), all[:size]...))
		ok := 0
		for i, q := range queries {
			if m := ix.Search(q, 1); m[0].Template.Label == want[i] && m[0].Score >= DefaultMinScore {
				ok++
			}
		}
		b.Run(fmt.Sprintf("templates=%d", size), func(b *testing.B) {
			b.Logf("top-1 accuracy with %d templates: %d/%d", size, ok, len(queries))
			i := 0
			for b.Loop() {
				ix.Search(queries[i%len(queries)], 3)
				i++
			}
		})
	}
}

// BenchmarkIndex measures start-up: describing one template.
func BenchmarkIndex(b *testing.B) {
	img := image.Image(demoTemplates(b)["stonks"])
	var s scratch
	for b.Loop() {
		describeTemplate("stonks", "stonks.png", img, &s)
	}
}
