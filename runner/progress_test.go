package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// stepper reports progress steps times in a row, then waits hold_ms so the
// folded last report is published while the request still runs. It
// answers with the errors Progress gave for bad values.
func stepper(t *testing.T) *runner.Algorithm {
	type stepIn struct {
		Steps  int `json:"steps"`
		HoldMS int `json:"hold_ms"`
	}
	type stepOut struct {
		Errors []string `json:"errors"`
	}
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "stepper", Version: "1.0.0", Timeout: 10 * time.Second,
		InputSchema:  []byte(`{"type":"object"}`),
		OutputSchema: []byte(`{"type":"object"}`),
	}, func(ctx context.Context, in stepIn) (stepOut, error) {
		var out stepOut
		for _, bad := range []struct {
			f   float64
			msg string
		}{{math.NaN(), ""}, {-0.1, ""}, {1.01, ""}, {0.5, strings.Repeat("x", protocol.MaxProgressMessage+1)}, {0.5, "a\x1b[31mred"}} {
			if err := runner.Progress(ctx, bad.f, bad.msg); err != nil {
				out.Errors = append(out.Errors, err.Error())
			}
		}
		for i := 1; i <= in.Steps; i++ {
			if err := runner.Progress(ctx, float64(i)/float64(in.Steps), fmt.Sprintf("step %d", i)); err != nil {
				return out, err
			}
		}
		time.Sleep(time.Duration(in.HoldMS) * time.Millisecond)
		return out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestProgressIsRateLimitedAndLatestWins(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, s.Connect(), []*runner.Algorithm{stepper(t)})
	sub, err := nc.SubscribeSync(protocol.ProgressSubject("stepper"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	hold := 3 * runner.ProgressInterval
	reply, err := nc.RequestMsg(&nats.Msg{Subject: "run.stepper", Data: fmt.Appendf(nil, `{"steps":1000,"hold_ms":%d}`, hold.Milliseconds()),
		Header: nats.Header{protocol.HeaderJobID: []string{"job.1"}}}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Errors []string }
	if err := json.Unmarshal(reply.Data, &out); err != nil {
		t.Fatalf("reply %s: %v", reply.Data, err)
	}
	if len(out.Errors) != 5 || !strings.Contains(out.Errors[0], "fraction") || !strings.Contains(out.Errors[3], "at most") || !strings.Contains(out.Errors[4], "control character") {
		t.Fatalf("Progress errors for bad values: %q", out.Errors)
	}
	var got []protocol.Progress
	for {
		m, err := sub.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		p, err := protocol.DecodeProgress(m.Data)
		if err != nil {
			t.Fatalf("published %s: %v", m.Data, err)
		}
		got = append(got, p)
	}
	// 1000 reports in a burst: the first goes at once, the rest fold into
	// one published when the interval is over, the latest.
	if len(got) != 2 {
		t.Fatalf("published %d reports, want 2: %+v", len(got), got)
	}
	if got[0].Message != "step 1" || got[1].Fraction != 1 || got[1].Message != "step 1000" || got[1].JobID != "job.1" || got[1].Instance == "" {
		t.Fatalf("published %+v", got)
	}
}

// Without a job id (a plain request, as nats req sends) Progress does
// nothing and the algorithm still answers.
func TestProgressWithoutJobIsANoOp(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, s.Connect(), []*runner.Algorithm{stepper(t)})
	sub, err := nc.SubscribeSync(protocol.ProgressSubjectPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request("run.stepper", []byte(`{"steps":3}`), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := runner.Progress(context.Background(), 0.5, "outside a job"); err != nil {
		t.Fatalf("Progress outside a request: %v", err)
	}
	if m, err := sub.NextMsg(2 * runner.ProgressInterval); err == nil {
		t.Fatalf("published %s for a request without a job id", m.Data)
	}
}
