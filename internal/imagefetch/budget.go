package imagefetch

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
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
// before it allocates anything. Give one Budget to every Fetcher of a
// process, so that the process as a whole is bounded, not each algorithm.
//
// A reservation ends when the decoded pixels are collected, not merely
// when the caller releases the image: memory the caller let go of is
// still resident until the garbage collector reclaims it, and counting it
// free earlier would let the process hold the budget several times over
// between collections. When a request waits and released pixels are in
// its way, the Budget asks for a collection (runtime.GC) instead of
// waiting for the next one; it never does otherwise. A caller that forgets
// Release holds its share until the image becomes unreachable.
//
// Reservations are granted in arrival order: a large picture waiting at
// the head is not overtaken by a stream of small ones. A Budget is safe for
// concurrent use.
type Budget struct {
	size int64
	gc   func() // runtime.GC

	mu         sync.Mutex
	held       int64     // reserved by images in use
	garbage    int64     // released, not yet collected
	waiters    list.List // of *budgetWaiter, oldest first
	collecting bool      // a gc call is under way
}

type budgetWaiter struct {
	n     int64
	res   *reservation
	ready chan struct{} // closed when granted
}

// reservation is n bytes of a Budget, held until released, then garbage
// until the object it tracks is collected.
type reservation struct {
	b     *Budget
	n     int64
	state int // reservationHeld, reservationReleased, reservationFreed
}

const (
	reservationHeld = iota
	reservationReleased
	reservationFreed
)

// gcSentinel is an object whose collection marks a completed collection
// cycle. It holds a pointer so the allocator never batches it with other
// tiny objects (whose cleanups might then never run).
type gcSentinel struct {
	_ *byte
	_ [16]byte
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
	return &Budget{size: size, gc: runtime.GC}, nil
}

// Size returns the budget's capacity in bytes.
func (b *Budget) Size() int64 { return b.size }

// InUse returns the bytes reserved now: by images in use, and by images
// released but not yet collected.
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held + b.garbage
}

// acquire reserves n bytes, waiting at most wait (and never past ctx) for
// room. It fails with errBudgetTimeout, or ctx's error, without holding
// anything. n must not exceed the budget's size.
func (b *Budget) acquire(ctx context.Context, n int64, wait time.Duration) (*reservation, error) {
	b.mu.Lock()
	if b.fitsLocked(n) && b.waiters.Len() == 0 {
		b.held += n
		b.mu.Unlock()
		return &reservation{b: b, n: n}, nil
	}
	if wait <= 0 {
		b.mu.Unlock()
		return nil, errBudgetTimeout
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	elem := b.waiters.PushBack(w)
	b.collectIfUsefulLocked()
	b.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	// A collection asked for while the releasing goroutine still held the
	// pixels reclaims nothing; ask again while waiting.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var err error
	for err == nil {
		select {
		case <-w.ready:
			return w.res, nil
		case <-tick.C:
			b.mu.Lock()
			b.collectIfUsefulLocked()
			b.mu.Unlock()
		case <-timer.C:
			err = errBudgetTimeout
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while giving up: keep it rather than lose the turn.
		return w.res, nil
	default:
	}
	b.waiters.Remove(elem)
	// Leaving the head of the queue may let smaller ones behind it in.
	b.grantLocked()
	return nil, err
}

func (b *Budget) fitsLocked(n int64) bool { return b.held+b.garbage+n <= b.size }

// grantLocked admits waiters from the head of the queue while they fit.
func (b *Budget) grantLocked() {
	for e := b.waiters.Front(); e != nil; e = b.waiters.Front() {
		w := e.Value.(*budgetWaiter)
		if !b.fitsLocked(w.n) {
			b.collectIfUsefulLocked()
			return
		}
		b.held += w.n
		w.res = &reservation{b: b, n: w.n}
		b.waiters.Remove(e)
		close(w.ready)
	}
}

// collectIfUsefulLocked starts a collection when the head waiter would fit
// once released images are reclaimed, unless one is under way.
func (b *Budget) collectIfUsefulLocked() {
	e := b.waiters.Front()
	if e == nil || b.collecting || b.garbage == 0 || b.held+e.Value.(*budgetWaiter).n > b.size {
		return
	}
	b.collecting = true
	go func() {
		b.gc()
		b.mu.Lock()
		b.collecting = false
		b.mu.Unlock()
	}()
}

// track makes the reservation end when the allocation p points into is
// collected (p may point inside it). The caller must not keep p alive
// longer than the memory it stands for.
func track[T any](r *reservation, p *T) {
	runtime.AddCleanup(p, (*reservation).collected, r)
}

// release marks the reservation's memory as let go of by its holder: it
// counts as garbage until collected.
func (r *reservation) release() {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.state != reservationHeld {
		return
	}
	r.state = reservationReleased
	b.held -= r.n
	b.garbage += r.n
	b.grantLocked()
}

// abandon ends a reservation whose decode failed: what the decoder
// allocated is already garbage, reclaimed by the next collection, which the
// collection of a fresh sentinel object marks.
func (r *reservation) abandon() {
	track(r, new(gcSentinel))
	r.release()
}

// collected returns the reservation's bytes to the budget: the memory it
// tracked has been reclaimed.
func (r *reservation) collected() {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch r.state {
	case reservationHeld:
		b.held -= r.n
	case reservationReleased:
		b.garbage -= r.n
	default:
		return
	}
	r.state = reservationFreed
	b.grantLocked()
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
