package memeclassifier

import (
	"sort"
	"testing"

	"github.com/corona10/goimagehash"

	"github.com/pnpworker/pnpworker/algo/meme_classifier/internal/synth"
)

// TestBaselinePHash runs the accuracy suite with the plain approach, the
// nearest template by goimagehash's 64-bit pHash Hamming distance, to show
// what the layout features and band windows buy. It only logs: the
// baseline is not a requirement.
func TestBaselinePHash(t *testing.T) {
	r, err := synth.NewRenderer()
	if err != nil {
		t.Fatal(err)
	}
	templates := demoTemplates(t)
	var labels []string
	hashes := map[string]*goimagehash.ImageHash{}
	for l, img := range templates {
		labels = append(labels, l)
		if hashes[l], err = goimagehash.PerceptionHash(img); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(labels)
	ok, n := 0, 0
	missed := map[string]int{}
	for _, v := range synth.Variants() {
		for _, l := range labels {
			img, err := v.Apply(r, templates[l])
			if err != nil {
				t.Fatal(err)
			}
			h, err := goimagehash.PerceptionHash(img)
			if err != nil {
				t.Fatal(err)
			}
			best, bestD := "", 65
			for _, c := range labels {
				if d, _ := h.Distance(hashes[c]); d < bestD {
					best, bestD = c, d
				}
			}
			n++
			if best == l {
				ok++
			} else {
				missed[v.Name]++
			}
		}
	}
	t.Logf("baseline (nearest goimagehash pHash, no unknown threshold): %d/%d = %.1f%%; misses by variant: %v",
		ok, n, 100*float64(ok)/float64(n), missed)
}
