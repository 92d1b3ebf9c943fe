package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/rs/zerolog"

	memeclassifier "github.com/pnpworker/pnpworker/algo/meme_classifier"
)

// serveDemoImages serves the meme_classifier demo gallery (/gallery/) and
// sample images (/samples/) over HTTP on addr, which must be a loopback
// address, so `pnp up` works on a fresh machine without an image host. It
// returns the base URL, the host:port to allowlist in the fetcher, and a
// function that stops the server.
func serveDemoImages(addr string, log zerolog.Logger) (base, hostPort string, stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", nil, fmt.Errorf("%w: --images-listen %q: want host:port", errUsage, addr)
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return "", "", nil, fmt.Errorf("%w: --images-listen %q: must be a loopback address such as 127.0.0.1:0", errUsage, addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", "", nil, fmt.Errorf("demo images: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/gallery/", http.StripPrefix("/gallery/", http.FileServerFS(memeclassifier.DemoGallery())))
	mux.Handle("/samples/", http.StripPrefix("/samples/", http.FileServerFS(memeclassifier.DemoSamples())))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		for _, dir := range []struct {
			name string
			fsys fs.FS
		}{{"gallery", memeclassifier.DemoGallery()}, {"samples", memeclassifier.DemoSamples()}} {
			entries, _ := fs.ReadDir(dir.fsys, ".")
			for _, e := range entries {
				_, _ = io.WriteString(w, "/"+dir.name+"/"+e.Name()+"\n")
			}
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("demo image server stopped")
		}
	}()
	hostPort = l.Addr().String()
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
	return "http://" + hostPort, hostPort, stop, nil
}
