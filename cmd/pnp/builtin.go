package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	imageinfo "github.com/pnpworker/pnpworker/algo/image_info"
	imagethumbnail "github.com/pnpworker/pnpworker/algo/image_thumbnail"
	languagedetection "github.com/pnpworker/pnpworker/algo/language_detection"
	memeclassifier "github.com/pnpworker/pnpworker/algo/meme_classifier"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/runner"
)

// builtin is an algorithm this binary can serve, built only when selected
// (meme_classifier indexes its gallery when built).
type builtin struct {
	name string
	new  func() (*runner.Algorithm, error)
}

// builtins lists every algorithm this binary can serve. Adding an algorithm
// to the binary is one line here: {wordcount.Name, wordcount.New}, for a
// package with a Name and a New() (*runner.Algorithm, error), as README.md
// shows (TestGoInDocs builds and runs pnp with that line added).
func builtins(c algoConfig) []builtin {
	return []builtin{
		{languagedetection.Name, languagedetection.New},
		{memeclassifier.Name, func() (*runner.Algorithm, error) { return memeclassifier.New(c.meme) }},
		{imageinfo.Name, func() (*runner.Algorithm, error) { return imageinfo.New(imageinfo.Config{Fetcher: c.fetcher}) }},
		{imagethumbnail.Name, func() (*runner.Algorithm, error) {
			return imagethumbnail.New(imagethumbnail.Config{Fetcher: c.fetcher})
		}},
	}
}

// algoConfig is what built-in algorithms take from flags and env: the
// meme_classifier gallery and the image fetcher both image algorithms
// share.
type algoConfig struct {
	meme    memeclassifier.Config
	fetcher *imagefetch.Fetcher
}

// newAlgoConfig builds the algorithms' settings. gallery is a folder, ""
// for the built-in demo gallery; allow lists the fetch allowlist entries
// (CIDRs or host:port); buckets lists the object store buckets obj://
// references may name, read through js (the runner's own connection);
// budget bounds the memory of all image decodes.
func newAlgoConfig(gallery string, allow, buckets []string, js jetstream.JetStream, budget *imagefetch.Budget, log zerolog.Logger) (algoConfig, error) {
	f, err := imagefetch.New(imagefetch.Config{Allow: allow, Budget: budget, Objects: js, Buckets: buckets})
	if err != nil {
		return algoConfig{}, fmt.Errorf("%w: fetch allowlist or object buckets (--fetch-allow, --object-buckets): %v", errUsage, err)
	}
	c := algoConfig{fetcher: f, meme: memeclassifier.Config{Fetcher: f, Logger: log}}
	if gallery != "" {
		c.meme.Gallery, c.meme.GalleryName = os.DirFS(gallery), gallery
	}
	return c, nil
}

// selectAlgorithmsWith builds the built-in algorithms named in list (comma
// separated), or all of them when list is empty or "all", or none for
// "none" (a runner serving --worker algorithms only), with the image
// settings c. Algorithms not named are not built.
func selectAlgorithmsWith(list string, c algoConfig) ([]*runner.Algorithm, error) {
	chosen, err := chooseBuiltins(list, c)
	if err != nil {
		return nil, err
	}
	out := make([]*runner.Algorithm, 0, len(chosen))
	for _, b := range chosen {
		a, err := b.new()
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// checkAlgorithmNames checks list as selectAlgorithmsWith would, without
// building anything, so that a bad name is reported before connecting.
func checkAlgorithmNames(list string) error {
	_, err := chooseBuiltins(list, algoConfig{})
	return err
}

// chooseBuiltins returns the built-ins named in list, or all of them, without
// building any: it only checks the names.
func chooseBuiltins(list string, c algoConfig) ([]builtin, error) {
	if strings.TrimSpace(list) == "none" {
		return nil, nil
	}
	all := builtins(c)
	var chosen []builtin
	if list == "" || list == "all" {
		chosen = all
	} else {
		byName := map[string]builtin{}
		var names []string
		for _, b := range all {
			byName[b.name] = b
			names = append(names, b.name)
		}
		sort.Strings(names)
		seen := map[string]bool{}
		for _, n := range strings.Split(list, ",") {
			n = strings.TrimSpace(n)
			if n == "" || seen[n] {
				continue
			}
			b, ok := byName[n]
			if !ok {
				return nil, fmt.Errorf("%w: unknown algorithm %q (built in: %s)", errUsage, n, strings.Join(names, ", "))
			}
			seen[n] = true
			chosen = append(chosen, b)
		}
		if len(chosen) == 0 {
			return nil, fmt.Errorf("%w: --algorithms names no algorithm", errUsage)
		}
	}
	return chosen, nil
}
