package memeclassifier_test

import (
	"fmt"
	"io/fs"

	memeclassifier "github.com/pnpworker/pnpworker/algo/meme_classifier"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
)

// The classifier indexes a gallery folder at start-up (here the demo
// gallery compiled into the binary; os.DirFS("/srv/memes") for your own)
// and names the template of each image, or "unknown" while still telling
// the best candidate.
func ExampleClassifier_ClassifyImage() {
	c, err := memeclassifier.NewClassifier(memeclassifier.Config{})
	if err != nil {
		panic(err)
	}
	fmt.Println("templates:", c.Index().Len())
	for _, file := range []string{"drake_pref_captioned.jpg", "expanding_brain_dark.jpg", "unrelated_photo.jpg"} {
		data, err := fs.ReadFile(memeclassifier.DemoSamples(), file)
		if err != nil {
			panic(err)
		}
		img, err := imagefetch.Decode(data, 0)
		if err != nil {
			panic(err)
		}
		out := c.ClassifyImage(img.Image)
		fmt.Printf("%s: %s (score over 0.5: %v)\n", file, out.Label, out.Score > 0.5)
		if out.Label == memeclassifier.Unknown {
			fmt.Printf("  the best candidate is still reported: %v\n", out.Candidate != "")
		} else if out.Crop.Top > 0 || out.Crop.Bottom > 0 {
			fmt.Printf("  found under caption bands (top %.0f%%, bottom %.0f%% of the height)\n", 100*out.Crop.Top, 100*out.Crop.Bottom)
		}
	}
	// Output:
	// templates: 16
	// drake_pref_captioned.jpg: drake_pref (score over 0.5: true)
	//   found under caption bands (top 12%, bottom 12% of the height)
	// expanding_brain_dark.jpg: expanding_brain (score over 0.5: true)
	// unrelated_photo.jpg: unknown (score over 0.5: false)
	//   the best candidate is still reported: true
}
