package imageinfo_test

import (
	"fmt"
	"io/fs"

	imageinfo "github.com/pnpworker/pnpworker/algo/image_info"
	memeclassifier "github.com/pnpworker/pnpworker/algo/meme_classifier"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
)

// Describe reports what the algorithm answers for a decoded image; the
// algorithm itself fetches image_url with the shared, guarded fetcher
// first.
func ExampleDescribe() {
	data, err := fs.ReadFile(memeclassifier.DemoGallery(), "drake_pref.png")
	if err != nil {
		panic(err)
	}
	img, err := imagefetch.Decode(data, 0)
	if err != nil {
		panic(err)
	}
	out, err := imageinfo.Describe(*img, 3)
	if err != nil {
		panic(err)
	}
	fmt.Println(out.Format, out.Width, out.Height)
	for _, c := range out.Colors {
		fmt.Printf("%s %.0f%%\n", c.Hex, 100*c.Fraction)
	}
	// Output:
	// png 400 400
	// #fafafa 50%
	// #f59922 42%
	// #8b591d 8%
}
