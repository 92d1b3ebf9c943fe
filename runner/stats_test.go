package runner_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/procstats"
	"github.com/pnpworker/pnpworker/runner"
)

// The endpoint's $SRV.STATS data carries the runner process's own
// goroutines and heap, which the soak (harness/chaos) asserts on.
func TestStatsReportProcess(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, nc, []*runner.Algorithm{wordCount(t, nil)})
	msg, err := nc.Request("$SRV.STATS.word_count", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Endpoints []struct {
			Data struct {
				Process *procstats.Snapshot `json:"process"`
			} `json:"data"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &st); err != nil || len(st.Endpoints) != 1 {
		t.Fatalf("stats %s: %v", msg.Data, err)
	}
	p := st.Endpoints[0].Data.Process
	if p == nil {
		t.Fatalf("stats data without process: %s", msg.Data)
	}
	if p.PID != os.Getpid() || p.Goroutines < 2 || p.HeapBytes == 0 || p.HeapLiveBytes == 0 {
		t.Fatalf("process %+v: want this process's pid %d, goroutines and heap", *p, os.Getpid())
	}
}
