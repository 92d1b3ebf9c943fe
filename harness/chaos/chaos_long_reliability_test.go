//go:build chaos

package chaos_test

import (
	"os"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/harness/chaos"
)

// TestLongScenariosReliability runs every scenario for PNP_CHAOS_DURATION
// (default 2m) each: go test -tags chaos -run Long -timeout 0 ./harness/chaos
func TestLongScenariosReliability(t *testing.T) {
	d := 2 * time.Minute
	if v := os.Getenv("PNP_CHAOS_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range chaos.Scenarios {
		t.Run(name, func(t *testing.T) {
			cfg := shortConfig(t, d)
			cfg.Rate = 50
			cfg.Settle = 3 * time.Minute
			if name == "soak" {
				cfg.Controllers = 2
			}
			rep := run(t, name, cfg)
			if name == "soak" {
				checkGrowth(t, rep.Extra["growth"].([]chaos.ProcessGrowth), cfg)
			}
		})
	}
}
