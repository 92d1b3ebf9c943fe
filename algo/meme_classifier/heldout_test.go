package memeclassifier

import (
	"sort"
	"testing"

	"github.com/pnpworker/pnpworker/algo/meme_classifier/internal/synth"
)

// The held-out floors. The figures were measured once, after the held-out
// suite was written and with the classifier unchanged (go test -run
// TestHeldOut -v ./algo/meme_classifier/); the floors are those figures with
// a margin, so that a change that shifts a picture or two does not fail the
// build while a real regression does. Nothing in the classifier was changed
// to move them (see the package doc: tuning never looks at the held-out set).
const (
	// heldOutMinAccuracy is the measured held-out top-1 accuracy, 167/288 =
	// 58.0%, minus 5 percentage points.
	heldOutMinAccuracy = 0.53
	// heldOutMaxFalsePositives is the measured held-out false-positive rate,
	// 0/72, plus 3 percentage points (at most 2 of the 72 pictures).
	heldOutMaxFalsePositives = 0.03
)

// heldOutKindFloors are the correct copies (of 16 templates × HeldOutReps)
// each held-out kind must keep: the measured count minus 3 (about 10
// percentage points), never under 0. Kinds measured at 0 are reported, not
// asserted: the classifier does not handle them (see the README's Limits).
var heldOutKindFloors = map[string]int{
	"jpeg_chain":               32 - 3,
	"thumbnail":                32 - 3,
	"border":                   9 - 3,
	"colour_shift":             28 - 3,
	"text_font":                32 - 3,
	"caption_font":             32 - 3,
	"screenshot":               0,
	"screenshot_of_screenshot": 0,
	"combo":                    max(0, 2-3),
}

// TestHeldOutAccuracy classifies copies of every demo template made by the
// held-out transformations (synth.HeldOutKinds: JPEG re-encoding chains,
// thumbnails, borders, colour shifts, text in other fonts and places,
// caption bands in other fonts and styles, screenshots of posts and of
// screenshots, a combination), HeldOutReps differently parameterised copies
// per kind, and reports the held-out accuracy. A copy counts as correct when
// the label (not just the candidate) is its template's.
func TestHeldOutAccuracy(t *testing.T) {
	c := newDemoClassifier(t)
	r, err := synth.NewRenderer()
	if err != nil {
		t.Fatal(err)
	}
	templates := demoTemplates(t)
	labels := make([]string, 0, len(templates))
	for l := range templates {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	kinds := synth.HeldOutKinds()
	correct, n := 0, 0
	for ki, k := range kinds {
		kok, kn := 0, 0
		for ti, label := range labels {
			for rep := range synth.HeldOutReps {
				g := synth.Rand(synth.HeldOutQuerySeed(ki, ti, rep))
				img, params, err := k.Make(r, g, templates[label])
				if err != nil {
					t.Fatal(err)
				}
				out := c.ClassifyImage(img)
				kn++
				if out.Label == label {
					kok++
					continue
				}
				t.Logf("miss: %s/%s#%d (%s) → %s (candidate %s, score %.3f)", label, k.Name, rep, params, out.Label, out.Candidate, out.Score)
			}
		}
		floor, ok := heldOutKindFloors[k.Name]
		if !ok {
			t.Errorf("held-out kind %s has no floor: measure it and add one", k.Name)
		}
		t.Logf("%-25s %2d/%d (floor %d)", k.Name, kok, kn, floor)
		if kok < floor {
			t.Errorf("held-out kind %s: %d/%d correct, under its floor %d", k.Name, kok, kn, floor)
		}
		correct, n = correct+kok, n+kn
	}
	acc := float64(correct) / float64(n)
	t.Logf("held-out top-1 accuracy: %d/%d = %.1f%% (%d templates × %d kinds × %d); floor %.0f%%",
		correct, n, 100*acc, len(labels), len(kinds), synth.HeldOutReps, 100*heldOutMinAccuracy)
	if acc < heldOutMinAccuracy {
		t.Fatalf("held-out top-1 accuracy %.1f%% is under its floor %.0f%%", 100*acc, 100*heldOutMinAccuracy)
	}
}

// TestHeldOutUnrelated classifies the held-out unrelated pictures
// (synth.HeldOutUnrelated) and reports the false-positive rate: the share
// labelled with a template instead of unknown.
func TestHeldOutUnrelated(t *testing.T) {
	c := newDemoClassifier(t)
	r, err := synth.NewRenderer()
	if err != nil {
		t.Fatal(err)
	}
	cases, err := r.HeldOutUnrelated()
	if err != nil {
		t.Fatal(err)
	}
	fp := 0
	maxScore, maxName := 0.0, ""
	for _, tc := range cases {
		out := c.ClassifyImage(tc.Image)
		if out.Score > maxScore {
			maxScore, maxName = out.Score, tc.Name
		}
		if out.Label != Unknown {
			fp++
			t.Logf("false positive: %s → %s (score %.3f)", tc.Name, out.Label, out.Score)
		}
	}
	rate := float64(fp) / float64(len(cases))
	t.Logf("held-out unrelated: %d/%d labelled with a template = %.1f%% false positives; highest score %.3f (%s); ceiling %.0f%%",
		fp, len(cases), 100*rate, maxScore, maxName, 100*heldOutMaxFalsePositives)
	if rate > heldOutMaxFalsePositives {
		t.Fatalf("held-out false-positive rate %.1f%% is over its ceiling %.0f%%", 100*rate, 100*heldOutMaxFalsePositives)
	}
}
