package memeclassifier

import (
	"bytes"
	"image"
	"image/png"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLabelOf(t *testing.T) {
	cases := []struct {
		path  string
		label string
		ok    bool
	}{
		{"drake_pref.png", "drake_pref", true},
		{"Drake Hotline Bling.JPG", "Drake Hotline Bling", true},
		{"drake_pref/original.jpg", "drake_pref", true},
		{"drake_pref/2023/variant.webp", "drake_pref", true},
		{"two.buttons.gif", "two.buttons", true},
		{"README.md", "", false},
		{"drake_pref/notes.txt", "", false},
		{".hidden.png", "", false},
		{".git/objects/x.png", "", false},
		{"drake_pref/.thumb.png", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			label, ok := LabelOf(tc.path)
			if label != tc.label || ok != tc.ok {
				t.Fatalf("LabelOf(%q) = %q, %v; want %q, %v", tc.path, label, ok, tc.label, tc.ok)
			}
		})
	}
}

func encodePNG(t *testing.T, w, h int, fill uint8) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = fill + uint8(i%w)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestLoadIndex(t *testing.T) {
	good := encodePNG(t, 40, 30, 10)
	cases := []struct {
		name      string
		fs        fstest.MapFS
		templates int
		labels    int
		err       []string // substrings of the error, all of them
	}{
		{"files and folders", fstest.MapFS{
			"a.png":        {Data: good},
			"b/1.png":      {Data: good},
			"b/2.png":      {Data: good},
			"b/notes.txt":  {Data: []byte("ignored")},
			".cache/x.png": {Data: []byte("ignored: hidden")},
		}, 3, 2, nil},
		{"empty", fstest.MapFS{"README.md": {Data: []byte("no images")}}, 0, 0, []string{"no images"}},
		{"every problem at once", fstest.MapFS{
			"unknown.png": {Data: good},
			"bad.png":     {Data: []byte("not a png")},
			"ok.png":      {Data: good},
		}, 0, 0, []string{`unknown.png: label "unknown" is reserved`, "bad.png: not an image"}},
		{"pixel budget", fstest.MapFS{"huge.png": {Data: encodePNG(t, 200, 200, 0)}}, 0, 0, []string{"huge.png", "over the limit"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ix, err := LoadIndex(tc.fs, 10000)
			if len(tc.err) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				for _, s := range tc.err {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ix.Len() != tc.templates || ix.Labels() != tc.labels {
				t.Fatalf("%d templates, %d labels; want %d, %d", ix.Len(), ix.Labels(), tc.templates, tc.labels)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"zero", Config{}, ""},
		{"min score", Config{MinScore: 1.5}, "min score"},
		{"timeout", Config{Timeout: -1}, "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}
