package memeclassifier

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/runner"
)

// Unknown is the label answered when no template is close enough. A
// gallery may not use it.
const Unknown = "unknown"

// imageExts are the file extensions read as templates; other files
// (README, licences, .DS_Store) are ignored.
var imageExts = map[string]bool{".png": true, ".jpg": true, ".jpeg": true, ".gif": true, ".webp": true, ".bmp": true, ".tif": true, ".tiff": true}

// LabelOf returns the label of the gallery file at p (slash-separated,
// relative to the gallery root) and whether p is a template at all: a file
// at the root is labelled by its name without extension
// ("drake_pref.png" → drake_pref); a file in a folder by the top folder's
// name ("drake_pref/1.jpg", "drake_pref/2023/x.png" → drake_pref). Hidden
// files and folders (".x") and files that are not images are not
// templates.
func LabelOf(p string) (string, bool) {
	ext := strings.ToLower(path.Ext(p))
	if !imageExts[ext] {
		return "", false
	}
	parts := strings.Split(p, "/")
	for _, part := range parts {
		if strings.HasPrefix(part, ".") {
			return "", false
		}
	}
	if len(parts) == 1 {
		return strings.TrimSuffix(parts[0], path.Ext(parts[0])), true
	}
	return parts[0], true
}

// LoadIndex reads every template of fsys (see LabelOf), decodes it with
// the same decoders and pixel budget as fetched images, and indexes it,
// using all CPUs. Decoded images are dropped as soon as they are described,
// so memory grows with the number of templates, not their size. Every
// unreadable file and reserved label, and an empty gallery, are reported
// together.
func LoadIndex(fsys fs.FS, maxPixels int64) (*Index, error) {
	var paths []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && strings.HasPrefix(d.Name(), ".") {
				return fs.SkipDir
			}
			return nil
		}
		if _, ok := LabelOf(p); ok {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gallery: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("gallery: no images (%s) found", strings.Join(sortedExts(), ", "))
	}
	sort.Strings(paths)

	templates := make([]Template, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(paths)) {
		wg.Go(func() {
			var s scratch
			for i := range next {
				templates[i], errs[i] = loadTemplate(fsys, paths[i], maxPixels, &s)
			}
		})
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("gallery: %w", err)
	}
	return buildIndex(templates), nil
}

func loadTemplate(fsys fs.FS, p string, maxPixels int64, s *scratch) (Template, error) {
	label, _ := LabelOf(p)
	if label == "" || !utf8.ValidString(label) {
		return Template{}, fmt.Errorf("%s: label %q is empty or not UTF-8", p, label)
	}
	if label == Unknown {
		return Template{}, fmt.Errorf("%s: label %q is reserved for pictures that match no template", p, Unknown)
	}
	data, err := fs.ReadFile(fsys, p)
	if err != nil {
		return Template{}, fmt.Errorf("%s: %w", p, err)
	}
	d, err := imagefetch.Decode(data, maxPixels)
	if err != nil {
		var re *runner.Error
		if errors.As(err, &re) {
			return Template{}, fmt.Errorf("%s: %s: %w", p, re.Message, re.Err)
		}
		return Template{}, fmt.Errorf("%s: %w", p, err)
	}
	return describeTemplate(label, p, d.Image, s), nil
}

func sortedExts() []string {
	var out []string
	for e := range imageExts {
		out = append(out, e)
	}
	sort.Strings(out)
	return out
}
