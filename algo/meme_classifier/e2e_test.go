package memeclassifier_test

import (
	"context"
	"encoding/json"
	"errors"
	"go/build"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	imageinfo "github.com/pnpworker/pnpworker/algo/image_info"
	memeclassifier "github.com/pnpworker/pnpworker/algo/meme_classifier"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// natsCLI finds the stock nats CLI: on PATH or in GOPATH/bin. Without it the
// test is skipped, unless CI is set: there it must run.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	p := filepath.Join(build.Default.GOPATH, "bin", "nats")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	msg := "the nats CLI is not installed (go install github.com/nats-io/natscli/nats@v0.5.0)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestEndToEnd serves meme_classifier and image_info from one runner on a
// real embedded NATS server, with the demo samples on a loopback HTTP
// server the fetcher is allowed to reach, and asks with the nats CLI.
func TestEndToEnd(t *testing.T) {
	cli := natsCLI(t)
	images := httptest.NewServer(http.FileServerFS(memeclassifier.DemoSamples()))
	t.Cleanup(images.Close)
	f, err := imagefetch.New(imagefetch.Config{Allow: []string{strings.TrimPrefix(images.URL, "http://")}})
	if err != nil {
		t.Fatal(err)
	}
	meme, err := memeclassifier.New(memeclassifier.Config{Fetcher: f})
	if err != nil {
		t.Fatal(err)
	}
	info, err := imageinfo.New(imageinfo.Config{Fetcher: f})
	if err != nil {
		t.Fatal(err)
	}

	srv := natstest.Start(t)
	nc := srv.Connect()
	r, err := runner.New(nc, []*runner.Algorithm{meme, info})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	})
	select {
	case <-r.Started():
	case err := <-done:
		t.Fatalf("runner: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("runner did not start")
	}

	req := func(t *testing.T, subject, body string) []byte {
		t.Helper()
		cmd := exec.Command(cli, "--server", srv.URL(), "--timeout", "10s", "request", subject, body, "--raw")
		cmd.Env = append(os.Environ(), "NATS_CONTEXT=", "HOME="+t.TempDir()) // no user context
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nats request %s: %v\n%s", subject, err, out)
		}
		return out
	}

	t.Run("meme_classifier", func(t *testing.T) {
		cases := []struct{ file, label string }{
			{"drake_pref_captioned.jpg", "drake_pref"},
			{"distracted_boyfriend_small.jpg", "distracted_boyfriend"},
			{"unrelated_photo.jpg", memeclassifier.Unknown},
		}
		for _, tc := range cases {
			t.Run(tc.file, func(t *testing.T) {
				out := req(t, "run.meme_classifier", `{"image_url":"`+images.URL+"/"+tc.file+`"}`)
				var got memeclassifier.Output
				if err := json.Unmarshal(out, &got); err != nil {
					t.Fatalf("reply %q: %v", out, err)
				}
				if got.Label != tc.label || got.Candidate == "" || got.Image.Format != "jpeg" {
					t.Fatalf("reply %s: want label %s", out, tc.label)
				}
			})
		}
	})

	t.Run("image_info", func(t *testing.T) {
		out := req(t, "run.image_info", `{"image_url":"`+images.URL+`/drake_pref_captioned.jpg","max_colors":3}`)
		var got imageinfo.Output
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("reply %q: %v", out, err)
		}
		if got.Width != 400 || got.Height != 528 || got.Format != "jpeg" || !strings.HasPrefix(got.PHash, "p:") ||
			len(got.Colors) == 0 || len(got.Colors) > 3 {
			t.Fatalf("reply %s", out)
		}
	})

	// Fetch failures come back as clear 4xx errors, and the runner keeps
	// serving afterwards.
	t.Run("errors", func(t *testing.T) {
		cases := []struct {
			url  string
			code int
			msg  string
		}{
			{"http://169.254.169.254/latest/meta-data/", 422, "blocked address"},
			{srv.URL(), 400, "scheme"}, // nats://
			{"http://127.0.0.1:1/x.png", 422, "blocked address"},
			{images.URL + "/missing.jpg", 422, "404"},
		}
		for _, tc := range cases {
			body, _ := json.Marshal(map[string]string{"image_url": tc.url})
			msg, err := nc.Request("run.meme_classifier", body, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			re := protocol.ReplyError(msg)
			if re == nil || re.Code != tc.code || !strings.Contains(re.Message, tc.msg) {
				t.Errorf("%s: got %v, want %d %q", tc.url, re, tc.code, tc.msg)
			}
		}
		out := req(t, "run.meme_classifier", `{"image_url":"`+images.URL+`/stonks_overlay.jpg"}`)
		if !strings.Contains(string(out), `"label":"stonks"`) {
			t.Fatalf("after errors: %s", out)
		}
		var re *runner.Error
		msg, err := nc.Request("run.image_info", []byte(`{"image_url":42}`), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if re = protocol.ReplyError(msg); re == nil || !errors.Is(re, runner.ErrInvalidInput) {
			t.Fatalf("schema violation: got %v", re)
		}
	})
}
