package imagefetch

import (
	"bytes"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"

	"github.com/pnpworker/pnpworker/internal/imagefetch/imagetest"
)

// allocated returns the bytes fn allocates (the test runs nothing else
// meanwhile).
func allocated(fn func()) int64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return int64(after.TotalAlloc - before.TotalAlloc)
}

// costCases returns encoded images of every format, colour type, bit depth
// and layout the decoders treat differently, large enough that the pixels
// dominate the fixed overheads.
func costCases(t *testing.T) map[string][]byte {
	t.Helper()
	const w, h = 800, 600
	cases := map[string][]byte{}
	for _, s := range []struct {
		name string
		spec imagetest.PNGSpec
	}{
		{"png gray8", imagetest.PNGSpec{ColorType: imagetest.Gray, Depth: 8}},
		{"png gray8 trns", imagetest.PNGSpec{ColorType: imagetest.Gray, Depth: 8, Transparent: true}},
		{"png gray16", imagetest.PNGSpec{ColorType: imagetest.Gray, Depth: 16}},
		{"png gray16 trns", imagetest.PNGSpec{ColorType: imagetest.Gray, Depth: 16, Transparent: true}},
		{"png rgb8", imagetest.PNGSpec{ColorType: imagetest.RGB, Depth: 8}},
		{"png rgb16 trns", imagetest.PNGSpec{ColorType: imagetest.RGB, Depth: 16, Transparent: true}},
		{"png paletted", imagetest.PNGSpec{ColorType: imagetest.Paletted, Depth: 8, Transparent: true}},
		{"png gray+alpha16", imagetest.PNGSpec{ColorType: imagetest.GrayAlpha, Depth: 16}},
		{"png rgba8", imagetest.PNGSpec{ColorType: imagetest.RGBA, Depth: 8}},
		{"png rgba16", imagetest.PNGSpec{ColorType: imagetest.RGBA, Depth: 16}},
		{"png rgba16 interlaced", imagetest.PNGSpec{ColorType: imagetest.RGBA, Depth: 16, Interlaced: true}},
		{"png gray8 interlaced", imagetest.PNGSpec{ColorType: imagetest.Gray, Depth: 8, Interlaced: true}},
	} {
		s.spec.W, s.spec.H = w, h
		cases[s.name] = imagetest.PNG(s.spec)
	}
	rgba := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range rgba.Pix {
		rgba.Pix[i] = byte(i * 7 / 3)
	}
	gray := image.NewGray(rgba.Rect)
	copy(gray.Pix, rgba.Pix)
	var b bytes.Buffer
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(jpeg.Encode(&b, rgba, nil))
	cases["jpeg 4:2:0"] = bytes.Clone(b.Bytes())
	b.Reset()
	must(jpeg.Encode(&b, gray, nil))
	cases["jpeg gray"] = bytes.Clone(b.Bytes())
	b.Reset()
	must(gif.Encode(&b, rgba, nil))
	cases["gif"] = bytes.Clone(b.Bytes())
	b.Reset()
	must(bmp.Encode(&b, rgba))
	cases["bmp rgba"] = bytes.Clone(b.Bytes())
	b.Reset()
	must(bmp.Encode(&b, image.NewPaletted(rgba.Rect, color.Palette{color.Black, color.White})))
	cases["bmp paletted"] = bytes.Clone(b.Bytes())
	b.Reset()
	must(tiff.Encode(&b, rgba, &tiff.Options{Compression: tiff.Deflate, Predictor: true}))
	cases["tiff rgba deflate"] = bytes.Clone(b.Bytes())
	b.Reset()
	must(tiff.Encode(&b, image.NewRGBA64(rgba.Rect), &tiff.Options{Compression: tiff.Uncompressed}))
	cases["tiff rgba64"] = bytes.Clone(b.Bytes())

	// The layouts Go cannot write (progressive, 4:4:4, 4:1:0, CMYK, RGB
	// JPEGs; WebP) from the test pictures of the standard library and of
	// golang.org/x/image. They are small: the fixed overhead dominates.
	for _, dir := range []string{filepath.Join(runtime.GOROOT(), "src", "image", "testdata"), xImageTestdata(t)} {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, f := range files {
			base := filepath.Base(f)
			if !strings.HasSuffix(base, ".jpeg") && !strings.HasSuffix(base, ".webp") || strings.Contains(base, "truncated") {
				continue
			}
			data, err := os.ReadFile(f)
			must(err)
			cases["file "+base] = data
		}
	}
	return cases
}

// TestDecodeCostBoundsAllocation decodes each kind of image and checks
// that what the decoder allocated never exceeds the cost computed from
// the header (the budget would be a lie otherwise), and that the cost is
// not wildly above it for ordinary pictures (the budget would turn
// requests away for nothing).
func TestDecodeCostBoundsAllocation(t *testing.T) {
	for name, data := range costCases(t) {
		t.Run(name, func(t *testing.T) {
			var d *Decoded
			var err error
			got := allocated(func() { d, err = Decode(data, 0) })
			if err != nil {
				t.Fatal(err)
			}
			if got > d.Cost {
				t.Errorf("%T %dx%d: decoding allocated %d bytes, over its computed cost %d", d.Image, d.Width, d.Height, got, d.Cost)
			}
			t.Logf("%T: allocated %d, cost %d (%.2f×)", d.Image, got, d.Cost, float64(d.Cost)/float64(got))
			if !strings.HasPrefix(name, "tiff") && !strings.HasPrefix(name, "file") && d.Cost > 3*got+decodeOverhead {
				t.Errorf("%T: cost %d is more than 3× what decoding allocated (%d)", d.Image, d.Cost, got)
			}
		})
	}
}

// xImageTestdata returns the testdata folder of golang.org/x/image in the
// module cache, or "" when the go command cannot say.
func xImageTestdata(t *testing.T) string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "golang.org/x/image").Output()
	if err != nil {
		t.Logf("golang.org/x/image test pictures unavailable: %v", err)
		return ""
	}
	return filepath.Join(strings.TrimSpace(string(out)), "testdata")
}
