package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"reflect"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// DefaultMaxBatch is Spec.MaxBatch's default for batch algorithms.
const DefaultMaxBatch = 32

// DefaultMaxWait is Spec.MaxWait's default for batch algorithms.
const DefaultMaxWait = 5 * time.Millisecond

// BatchFunc is the function behind a batch algorithm: it gets the inputs of
// several requests at once (at most Spec.MaxBatch, in arrival order) and
// returns one output per input, in the same order. Return a BatchErrors to
// fail some items only; any other error fails every item of the call.
// ctx ends when the latest deadline among the items passes, or when every
// caller of the batch has gone.
type BatchFunc[In, Out any] func(ctx context.Context, in []In) ([]Out, error)

// BatchErrors is a per-item result of a BatchFunc: BatchErrors[i] is the
// error of item i, or nil when its output stands. It must have one entry
// per input.
type BatchErrors []error

func (b BatchErrors) Error() string {
	n := 0
	for _, e := range b {
		if e != nil {
			n++
		}
	}
	return fmt.Sprintf("%d of %d batch items failed", n, len(b))
}

// NewBatchAlgorithm is NewAlgorithm for functions that are faster on many
// inputs at once (models on a GPU, vectorised code). Requests that arrive
// together are grouped into one call of fn, up to spec.MaxBatch; a lone
// request waits at most spec.MaxWait for company while a batch slot is free.
// Each caller still gets its own reply, its own error, and its own deadline:
// a caller whose deadline passes is answered 504 at once, and an item whose
// caller has gone before its batch starts is left out of the batch.
//
// spec.MaxConcurrency counts requests, not batches; it defaults to
// 2×MaxBatch, and max(1, MaxConcurrency/MaxBatch) batches run at once. The
// sizes of the batches are in the micro STATS data under "batches". Schemas
// the spec leaves empty are derived from In and Out, as by NewAlgorithm.
func NewBatchAlgorithm[In, Out any](spec Spec, fn BatchFunc[In, Out]) (*Algorithm, error) {
	if spec.MaxBatch == 0 {
		spec.MaxBatch = DefaultMaxBatch
	}
	if spec.MaxWait == 0 {
		spec.MaxWait = DefaultMaxWait
	}
	if spec.MaxConcurrency == 0 && spec.MaxBatch > 0 {
		spec.MaxConcurrency = 2 * spec.MaxBatch
	}
	a, err := compile(spec, fn == nil, reflect.TypeFor[In](), reflect.TypeFor[Out]())
	if err != nil {
		return nil, err
	}
	b := &batcher{
		maxBatch: a.spec.MaxBatch,
		maxWait:  a.spec.MaxWait,
		slots:    make(chan struct{}, max(1, a.spec.MaxConcurrency/a.spec.MaxBatch)),
	}
	b.run = func(ctx context.Context, bodies [][]byte) ([]any, []error) {
		ins := make([]In, 0, len(bodies))
		errs := make([]error, len(bodies))
		idx := make([]int, 0, len(bodies)) // position in bodies of ins[k]
		for i, body := range bodies {
			var v In
			if err := json.Unmarshal(body, &v); err != nil {
				errs[i] = &Error{Code: CodeInvalidInput, Message: "input does not fit the algorithm's type: " + err.Error()}
				continue
			}
			ins = append(ins, v)
			idx = append(idx, i)
		}
		outs := make([]any, len(bodies))
		if len(ins) == 0 {
			return outs, errs
		}
		res, err := fn(ctx, ins)
		var per BatchErrors
		switch {
		case errors.As(err, &per) && len(per) == len(ins) && len(res) == len(ins):
		case err != nil:
			for _, i := range idx {
				errs[i] = err
			}
			return outs, errs
		case len(res) != len(ins):
			err := &Error{Code: CodeInternal, Message: ErrInternal.Message, Err: fmt.Errorf("batch function returned %d outputs for %d inputs", len(res), len(ins))}
			for _, i := range idx {
				errs[i] = err
			}
			return outs, errs
		}
		for k, i := range idx {
			if per != nil && per[k] != nil {
				errs[i] = per[k]
				continue
			}
			outs[i] = res[k]
		}
		return outs, errs
	}
	a.batch = b
	a.call = b.call
	return a, nil
}

// batcher groups concurrent calls. The first call of a batch leads it: it
// waits until the batch is full or MaxWait passed, then for a free slot
// (the batch keeps filling meanwhile, so batches grow with the load), then
// runs the batch on its own goroutine and hands every item its result.
type batcher struct {
	maxBatch int
	maxWait  time.Duration
	slots    chan struct{}
	run      func(ctx context.Context, bodies [][]byte) ([]any, []error)

	mu   sync.Mutex
	open *batch // the batch new calls join; nil when none

	batches  atomic.Int64
	items    atomic.Int64
	maxSize  atomic.Int64
	sizeMu   sync.Mutex
	sizeHist [16]int64 // batches by size: [0] = 1, [1] = 2-3, [2] = 4-7, ...
}

type batch struct {
	items []*batchItem
	full  chan struct{}
}

type batchItem struct {
	ctx  context.Context
	body []byte
	done chan struct{}
	out  any
	err  error
}

func (b *batcher) call(ctx context.Context, body []byte) (any, error) {
	it := &batchItem{ctx: ctx, body: body, done: make(chan struct{})}
	b.mu.Lock()
	leader := b.open == nil
	if leader {
		b.open = &batch{full: make(chan struct{})}
	}
	bt := b.open
	bt.items = append(bt.items, it)
	if len(bt.items) >= b.maxBatch {
		b.open = nil
		close(bt.full)
	}
	b.mu.Unlock()
	if leader {
		b.lead(bt, zerolog.Ctx(ctx))
	}
	select {
	case <-it.done:
		return it.out, it.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *batcher) lead(bt *batch, log *zerolog.Logger) {
	t := time.NewTimer(b.maxWait)
	select {
	case <-bt.full:
	case <-t.C:
	}
	t.Stop()
	b.slots <- struct{}{}
	defer func() { <-b.slots }()
	b.mu.Lock()
	if b.open == bt {
		b.open = nil
	}
	items := bt.items
	b.mu.Unlock()

	live := items[:0:0]
	var latest time.Time
	for _, it := range items {
		if it.ctx.Err() != nil {
			close(it.done) // its caller was answered already
			continue
		}
		live = append(live, it)
		if d, ok := it.ctx.Deadline(); ok && d.After(latest) {
			latest = d
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithDeadline(withoutProgress(context.WithoutCancel(live[0].ctx)), latest)
	defer cancel()
	// The batch is cancelled once every one of its callers has gone.
	var left atomic.Int64
	left.Store(int64(len(live)))
	for _, it := range live {
		stop := context.AfterFunc(it.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	b.record(len(live))

	bodies := make([][]byte, len(live))
	for i, it := range live {
		bodies[i] = it.body
	}
	outs, errs := b.runSafely(ctx, bodies, log)
	for i, it := range live {
		it.out, it.err = outs[i], errs[i]
		close(it.done)
	}
}

// runSafely runs a batch and turns a panic into a 500 for every item, so a
// panicking batch cannot leave its other callers waiting.
func (b *batcher) runSafely(ctx context.Context, bodies [][]byte, log *zerolog.Logger) (outs []any, errs []error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error().Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).Int("batch_size", len(bodies)).Msg("batch algorithm panicked")
			outs, errs = make([]any, len(bodies)), make([]error, len(bodies))
			for i := range errs {
				errs[i] = &Error{Code: CodeInternal, Message: "algorithm panicked", Err: fmt.Errorf("panic: %v", p)}
			}
		}
	}()
	return b.run(ctx, bodies)
}

func (b *batcher) record(n int) {
	b.batches.Add(1)
	b.items.Add(int64(n))
	for {
		m := b.maxSize.Load()
		if int64(n) <= m || b.maxSize.CompareAndSwap(m, int64(n)) {
			break
		}
	}
	bucket := min(bits.Len(uint(n))-1, len(b.sizeHist)-1)
	b.sizeMu.Lock()
	b.sizeHist[bucket]++
	b.sizeMu.Unlock()
}

// BatchStats are a batch algorithm's batch sizes, in the micro STATS data
// of its endpoint under "batches".
type BatchStats struct {
	// Batches is how many calls of the batch function ran; Items how many
	// requests they carried.
	Batches int64 `json:"batches"`
	Items   int64 `json:"items"`
	// AvgSize is Items/Batches; MaxSize the largest batch so far.
	AvgSize float64 `json:"avg_size"`
	MaxSize int64   `json:"max_size"`
	// Sizes counts batches by size range: "1", "2-3", "4-7", ...
	Sizes map[string]int64 `json:"sizes,omitempty"`
	// MaxBatch and MaxWaitMS are the algorithm's settings.
	MaxBatch  int     `json:"max_batch"`
	MaxWaitMS float64 `json:"max_wait_ms"`
}

func (b *batcher) stats() *BatchStats {
	s := &BatchStats{
		Batches:   b.batches.Load(),
		Items:     b.items.Load(),
		MaxSize:   b.maxSize.Load(),
		MaxBatch:  b.maxBatch,
		MaxWaitMS: float64(b.maxWait) / float64(time.Millisecond),
	}
	if s.Batches > 0 {
		s.AvgSize = float64(s.Items) / float64(s.Batches)
	}
	b.sizeMu.Lock()
	defer b.sizeMu.Unlock()
	for i, n := range b.sizeHist {
		if n == 0 {
			continue
		}
		if s.Sizes == nil {
			s.Sizes = map[string]int64{}
		}
		lo, hi := 1<<i, (1<<(i+1))-1
		key := strconv.Itoa(lo)
		if hi > lo {
			key += "-" + strconv.Itoa(hi)
		}
		s.Sizes[key] = n
	}
	return s
}
