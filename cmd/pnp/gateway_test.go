package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

// TestMain keeps every `pnp up` of the tests off the default HTTP port:
// parallel runs (and a developer's own pnp up) would collide on 8080.
func TestMain(m *testing.M) {
	if os.Getenv("PNP_HTTP") == "" {
		os.Setenv("PNP_HTTP", "127.0.0.1:0")
	}
	os.Exit(m.Run())
}

func TestGatewayRefusesNonLoopbackWithoutToken(t *testing.T) {
	for _, args := range [][]string{
		{"gateway", "--http", "0.0.0.0:0"},
		{"up", "--http", ":0", "--data", t.TempDir()},
	} {
		var stdout, stderr bytes.Buffer
		t.Setenv("PNP_HTTP_TOKEN", "")
		code := run(context.Background(), args, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), "bearer token is required") {
			t.Errorf("pnp %s: exit %d, stderr %q; want 2 and a refusal", strings.Join(args, " "), code, stderr.String())
		}
	}
}
