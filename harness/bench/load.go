package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/protocol"
)

// LoadConfig configures Generate. The zero value sends DefaultRequests
// requests with DefaultInFlight in flight and DefaultRequestTimeout each.
type LoadConfig struct {
	// Requests is how many requests to send. Default DefaultRequests.
	Requests int
	// InFlight is how many requests are outstanding at any time: that many
	// requesters each send one request and wait for its reply before
	// sending the next (a closed loop). Default DefaultInFlight.
	InFlight int
	// Timeout bounds each request; a request that times out counts as an
	// error. Default DefaultRequestTimeout.
	Timeout time.Duration
}

// Defaults of LoadConfig and Config.
const (
	DefaultRequests       = 20000
	DefaultInFlight       = 64
	DefaultRequestTimeout = 5 * time.Second
)

func (c *LoadConfig) setDefaults() {
	if c.Requests == 0 {
		c.Requests = DefaultRequests
	}
	if c.InFlight == 0 {
		c.InFlight = DefaultInFlight
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultRequestTimeout
	}
}

// Validate reports every problem with c (before defaults).
func (c LoadConfig) Validate() error {
	var errs []error
	if c.Requests < 0 {
		errs = append(errs, fmt.Errorf("requests %d is negative", c.Requests))
	}
	if c.InFlight < 0 {
		errs = append(errs, fmt.Errorf("in flight %d is negative", c.InFlight))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("request timeout %s is negative", c.Timeout))
	}
	return errors.Join(errs...)
}

// Result is what one load run measured. Latencies are those of successful
// requests, from just before the request is published to just after its
// reply is received.
type Result struct {
	// Requests is how many requests were sent; OK + Errors == Requests
	// unless the context ended the run early.
	Requests int `json:"requests"`
	OK       int `json:"ok"`
	Errors   int `json:"errors"`
	// FirstError describes the first failed request, if any.
	FirstError string `json:"first_error,omitempty"`
	// Elapsed is the wall time from the first request to the last reply.
	Elapsed time.Duration `json:"elapsed_ns"`
	// PerSecond is OK / Elapsed.
	PerSecond float64       `json:"req_per_s"`
	P50       time.Duration `json:"p50_ns"`
	P90       time.Duration `json:"p90_ns"`
	P99       time.Duration `json:"p99_ns"`
	Max       time.Duration `json:"max_ns"`
	// CPUPerRequest is the CPU time (user + system) this whole process used
	// during the run, divided by Requests. It covers the load generator,
	// the responder and an embedded server alike, so only differences
	// between runs of the same setup mean something. Zero where the
	// platform does not report it.
	CPUPerRequest time.Duration `json:"cpu_per_request_ns"`
}

// Generate sends cfg.Requests requests to subject over nc, cfg.InFlight at
// a time, request i carrying payloads[i%len(payloads)], and measures
// throughput and latency. A reply counts as an error when it carries the
// micro error headers (protocol.ReplyError). Generate returns an error only
// when its arguments are unusable or ctx ends before every request was sent;
// failed requests are counted in the Result.
//
// Generate is safe to call from several goroutines, but the measurements
// then disturb each other.
func Generate(ctx context.Context, nc *nats.Conn, subject string, payloads [][]byte, cfg LoadConfig) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, fmt.Errorf("bench: load: %w", err)
	}
	if len(payloads) == 0 {
		return Result{}, errors.New("bench: load: no payloads")
	}
	if nc == nil {
		return Result{}, errors.New("bench: load: nats connection is nil")
	}
	cfg.setDefaults()
	return generate(ctx, subject, payloads, cfg, func(_ context.Context, data []byte) error {
		reply, err := nc.RequestMsg(&nats.Msg{Subject: subject, Data: data}, cfg.Timeout)
		if err == nil {
			if rerr := protocol.ReplyError(reply); rerr != nil {
				err = rerr
			}
		}
		return err
	})
}

// GenerateHTTP is Generate for an HTTP endpoint: each request is a POST of
// the payload as application/json to url, and a reply counts as an error
// unless its status is 200. client should keep at least cfg.InFlight idle
// connections per host so that connections are reused, as NATS's one
// connection is.
func GenerateHTTP(ctx context.Context, client *http.Client, url string, payloads [][]byte, cfg LoadConfig) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, fmt.Errorf("bench: load: %w", err)
	}
	if len(payloads) == 0 {
		return Result{}, errors.New("bench: load: no payloads")
	}
	cfg.setDefaults()
	return generate(ctx, url, payloads, cfg, func(ctx context.Context, data []byte) error {
		ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(data))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("http status %d", resp.StatusCode)
		}
		return err
	})
}

// generate runs the closed loop of Generate with send doing one request.
func generate(ctx context.Context, subject string, payloads [][]byte, cfg LoadConfig, send func(context.Context, []byte) error) (Result, error) {

	var (
		next     atomic.Int64
		errCount atomic.Int64
		firstErr atomic.Pointer[string]
		wg       sync.WaitGroup
	)
	lat := make([][]time.Duration, cfg.InFlight)
	per := cfg.Requests/cfg.InFlight + 1
	cpu0 := processCPU()
	start := time.Now()
	for w := range cfg.InFlight {
		lat[w] = make([]time.Duration, 0, per)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(cfg.Requests) {
					return
				}
				t0 := time.Now()
				err := send(ctx, payloads[i%int64(len(payloads))])
				d := time.Since(t0)
				if err != nil {
					errCount.Add(1)
					s := err.Error()
					firstErr.CompareAndSwap(nil, &s)
					continue
				}
				lat[w] = append(lat[w], d)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0

	all := slices.Concat(lat...)
	slices.Sort(all)
	sent := min(int(next.Load()), cfg.Requests)
	r := Result{
		Requests: sent,
		OK:       len(all),
		Errors:   int(errCount.Load()),
		Elapsed:  elapsed,
		P50:      percentile(all, 0.50),
		P90:      percentile(all, 0.90),
		P99:      percentile(all, 0.99),
	}
	if len(all) > 0 {
		r.Max = all[len(all)-1]
	}
	if elapsed > 0 {
		r.PerSecond = float64(r.OK) / elapsed.Seconds()
	}
	if sent > 0 && cpu > 0 {
		r.CPUPerRequest = cpu / time.Duration(sent)
	}
	if p := firstErr.Load(); p != nil {
		r.FirstError = *p
	}
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("bench: load on %s stopped after %d of %d requests: %w", subject, sent, cfg.Requests, err)
	}
	return r, nil
}

// percentile returns the q-quantile of sorted (nearest rank), or 0 when
// sorted is empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
