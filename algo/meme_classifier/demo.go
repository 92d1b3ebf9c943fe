package memeclassifier

//go:generate go run ./gengallery -out demo

import (
	"embed"
	"io/fs"
)

// demo holds the generated demo gallery and samples (see gengallery).
//
//go:embed demo/gallery demo/samples
var demo embed.FS

// DemoGallery returns the demo gallery compiled into the binary: one PNG
// per template, drawn by gengallery, label = file name. It is the gallery
// when Config.Gallery is nil.
func DemoGallery() fs.FS { return mustSub("demo/gallery") }

// DemoSamples returns the demo sample images compiled into the binary:
// transformed copies of some demo templates (file name = template name +
// transformation) and one unrelated photo-like image, for demos and tests.
func DemoSamples() fs.FS { return mustSub("demo/samples") }

func mustSub(dir string) fs.FS {
	sub, err := fs.Sub(demo, dir)
	if err != nil {
		panic("memeclassifier: " + err.Error()) // dir is a constant embedded above
	}
	return sub
}
