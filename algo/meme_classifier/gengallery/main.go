// Command gengallery draws the meme_classifier demo gallery and sample
// images. It is deterministic: running it again rewrites identical files.
//
//	go generate ./algo/meme_classifier   # runs: go run ./gengallery -out demo
//
// It writes <out>/gallery/<template>.png, one file per template, and
// <out>/samples/*.jpg, transformed copies of some templates (resized,
// re-encoded, cropped, captioned, darkened, rotated) plus one unrelated
// photo-like image that should come back "unknown". The drawings and
// transformations are in package internal/synth, which the tests use too.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"

	"github.com/pnpworker/pnpworker/algo/meme_classifier/internal/synth"
)

func main() {
	out := flag.String("out", "demo", "output directory")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gengallery:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	r, err := synth.NewRenderer()
	if err != nil {
		return err
	}
	for _, dir := range []string{"gallery", "samples"} {
		if err := os.MkdirAll(filepath.Join(out, dir), 0o755); err != nil {
			return err
		}
	}
	templates := map[string]image.Image{}
	for _, name := range synth.Names() {
		img, err := r.Template(name)
		if err != nil {
			return err
		}
		templates[name] = img
		var buf bytes.Buffer
		enc := png.Encoder{CompressionLevel: png.BestCompression}
		if err := enc.Encode(&buf, img); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(out, "gallery", name+".png"), buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	for _, s := range synth.Samples() {
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, s.Make(r, templates[s.Template]), &jpeg.Options{Quality: s.Quality}); err != nil {
			return fmt.Errorf("%s: %w", s.File, err)
		}
		if err := os.WriteFile(filepath.Join(out, "samples", s.File), buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}
