package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/rs/zerolog"

	imageinfo "pnpworker/algo/image_info"
	languagedetection "pnpworker/algo/language_detection"
	memeclassifier "pnpworker/algo/meme_classifier"
	"pnpworker/internal/imagefetch"
	"pnpworker/runner"
)

// builtins lists every algorithm this binary can serve. Adding an algorithm
// to the binary is one line here.
func builtins(c algoConfig) []func() (*runner.Algorithm, error) {
	return []func() (*runner.Algorithm, error){
		languagedetection.New,
		func() (*runner.Algorithm, error) { return memeclassifier.New(c.meme) },
		func() (*runner.Algorithm, error) { return imageinfo.New(imageinfo.Config{Fetcher: c.fetcher}) },
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
// (CIDRs or host:port).
func newAlgoConfig(gallery string, allow []string, log zerolog.Logger) (algoConfig, error) {
	f, err := imagefetch.New(imagefetch.Config{Allow: allow})
	if err != nil {
		return algoConfig{}, fmt.Errorf("%w: fetch allowlist (--fetch-allow, PNP_FETCH_ALLOW): %v", errUsage, err)
	}
	c := algoConfig{fetcher: f, meme: memeclassifier.Config{Fetcher: f, Logger: log}}
	if gallery != "" {
		c.meme.Gallery, c.meme.GalleryName = os.DirFS(gallery), gallery
	}
	return c, nil
}

// selectAlgorithms builds the built-in algorithms named in list (comma
// separated), or all of them when list is empty or "all", with the image
// settings of the environment (PNP_GALLERY, PNP_FETCH_ALLOW).
func selectAlgorithms(list string) ([]*runner.Algorithm, error) {
	c, err := newAlgoConfig(os.Getenv("PNP_GALLERY"), imagefetch.ParseAllow(os.Getenv("PNP_FETCH_ALLOW")), zerolog.Nop())
	if err != nil {
		return nil, err
	}
	return selectAlgorithmsWith(list, c)
}

// selectAlgorithmsWith is selectAlgorithms with explicit image settings.
func selectAlgorithmsWith(list string, c algoConfig) ([]*runner.Algorithm, error) {
	var all []*runner.Algorithm
	for _, newAlg := range builtins(c) {
		a, err := newAlg()
		if err != nil {
			return nil, err
		}
		all = append(all, a)
	}
	if list == "" || list == "all" {
		return all, nil
	}
	byName := map[string]*runner.Algorithm{}
	var names []string
	for _, a := range all {
		byName[a.Name()] = a
		names = append(names, a.Name())
	}
	sort.Strings(names)
	var out []*runner.Algorithm
	seen := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		a, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("%w: unknown algorithm %q (built in: %s)", errUsage, n, strings.Join(names, ", "))
		}
		seen[n] = true
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: --algorithms names no algorithm", errUsage)
	}
	return out, nil
}
