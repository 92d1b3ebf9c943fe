package imagefetch

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// DefaultDecodeBudget is the size of a Budget made with size 0: room for
// one 16-bit RGBA picture of 16 Mpx (128 MiB) and several ordinary photos
// beside it, or two 8-bit 4096×4096 RGBA pictures.
const DefaultDecodeBudget = 256 << 20

// Budget bounds the bytes that decoding images may hold at once across
// every Fetcher sharing it: each decode reserves its cost (see Decode)
// before it allocates anything and gives it back when the caller releases
// the image. Give one Budget to every Fetcher of a process, so that the
// process as a whole is bounded, not each algorithm.
//
// Reservations are granted in arrival order: a large picture waiting at
// the head is not overtaken by a stream of small ones. A Budget is safe for
// concurrent use.
type Budget struct {
	size int64

	mu      sync.Mutex
	used    int64
	waiters list.List // of *budgetWaiter, oldest first
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed when granted
}

// errBudgetTimeout is what acquire returns when its wait ended before the
// reservation was granted.
var errBudgetTimeout = errors.New("decode budget: no room in time")

// NewBudget returns a Budget of size bytes; size 0 means
// DefaultDecodeBudget. A negative size is an error.
func NewBudget(size int64) (*Budget, error) {
	if size < 0 {
		return nil, fmt.Errorf("imagefetch: decode budget %d is negative", size)
	}
	if size == 0 {
		size = DefaultDecodeBudget
	}
	return &Budget{size: size}, nil
}

// Size returns the budget's capacity in bytes.
func (b *Budget) Size() int64 { return b.size }

// InUse returns the bytes reserved now.
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// acquire reserves n bytes, waiting at most wait (and never past ctx) for
// room. It fails with errBudgetTimeout, or ctx's error, without holding
// anything. n must not exceed the budget's size.
func (b *Budget) acquire(ctx context.Context, n int64, wait time.Duration) (release func(), err error) {
	b.mu.Lock()
	if b.used+n <= b.size && b.waiters.Len() == 0 {
		b.used += n
		b.mu.Unlock()
		return b.releaser(n), nil
	}
	if wait <= 0 {
		b.mu.Unlock()
		return nil, errBudgetTimeout
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	elem := b.waiters.PushBack(w)
	b.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-w.ready:
		return b.releaser(n), nil
	case <-timer.C:
		err = errBudgetTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while giving up: keep it rather than lose the turn.
		return b.releaser(n), nil
	default:
	}
	b.waiters.Remove(elem)
	// Leaving the head of the queue may let smaller ones behind it in.
	b.grantLocked()
	return nil, err
}

// releaser returns a function that gives n bytes back, once.
func (b *Budget) releaser(n int64) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.used -= n
			b.grantLocked()
			b.mu.Unlock()
		})
	}
}

// grantLocked admits waiters from the head of the queue while they fit.
func (b *Budget) grantLocked() {
	for e := b.waiters.Front(); e != nil; e = b.waiters.Front() {
		w := e.Value.(*budgetWaiter)
		if b.used+w.n > b.size {
			return
		}
		b.used += w.n
		b.waiters.Remove(e)
		close(w.ready)
	}
}

// ParseSize reads a byte size as written in a flag or environment variable:
// a whole number of bytes, or one with a binary unit (KiB, MiB, GiB; K, M,
// G and KB, MB, GB mean the same powers of 1024), e.g. "256MiB".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	num := strings.TrimRightFunc(t, func(r rune) bool { return unicode.IsLetter(r) || r == ' ' })
	unit := strings.ToLower(strings.TrimSpace(t[len(num):]))
	shift := map[string]uint{"": 0, "b": 0, "k": 10, "kb": 10, "kib": 10, "m": 20, "mb": 20, "mib": 20, "g": 30, "gb": 30, "gib": 30}
	sh, ok := shift[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || n < 0 || n > math.MaxInt64>>sh {
		return 0, fmt.Errorf("imagefetch: size %q: want bytes or a number with KiB, MiB or GiB, e.g. 256MiB", s)
	}
	return n << sh, nil
}
