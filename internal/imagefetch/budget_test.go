package imagefetch

import (
	"context"
	"encoding/base64"
	"errors"
	"image"
	"image/color"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/imagefetch/imagetest"
	"github.com/pnpworker/pnpworker/protocol"
)

// A picture under the pixel cap whose decoding would take more memory than
// the limit is refused from its header with a 413 naming the limit, before
// anything is decoded.
func TestDecodeRefusesByBytesBeforeDecoding(t *testing.T) {
	// A Fetcher's own limit: a 16-bit RGBA 1024×1024 PNG (8 MiB) under a
	// 4 MiB limit.
	small := "data:image/png;base64," + base64.StdEncoding.EncodeToString(
		imagetest.PNG(imagetest.PNGSpec{W: 1024, H: 1024, ColorType: imagetest.RGBA, Depth: 16}))
	f, err := New(Config{MaxDecodeBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var re *protocol.Error
	_, err = f.Fetch(context.Background(), small)
	if !errors.As(err, &re) || re.Code != protocol.CodeTooLarge || !strings.Contains(re.Message, "image_url: decoding the 1024×1024 png image takes up to") || !strings.Contains(re.Message, "over the limit of 4194304") {
		t.Fatalf("Fetch under a 4 MiB limit = %v, want a 413 naming the limit", err)
	}

	// The default: a 140 KB interlaced 16-bit RGBA PNG of 4096×4096, under
	// the pixel cap, takes 256 MiB to decode (the image and as many pixels
	// again in passes).
	if raceEnabled {
		t.Skip("building a 4096×4096 PNG takes minutes under the race detector")
	}
	bomb := imagetest.PNG(imagetest.PNGSpec{W: 4096, H: 4096, ColorType: imagetest.RGBA, Depth: 16, Interlaced: true})
	got := allocated(func() { _, err = Decode(bomb, 0) })
	if !errors.As(err, &re) || re.Code != protocol.CodeTooLarge || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decode = %v, want a 413 ErrTooLarge", err)
	}
	if !strings.Contains(re.Message, "over the limit of 268435456") {
		t.Errorf("message %q does not name the limit", re.Message)
	}
	if got > 1<<20 {
		t.Errorf("refusing the image allocated %d bytes: it was decoded", got)
	}
}

// Shrink allocates the thumbnail and a few rows whatever the picture's
// type and size: converting a decoded picture must not cost a second
// picture's worth of memory (the generic path used to allocate a
// color.Color per pixel, 128 MiB of garbage for a 16-bit 4096×4096).
func TestShrinkAllocationIndependentOfSize(t *testing.T) {
	r := image.Rect(0, 0, 1024, 1024)
	ycc := image.NewYCbCr(r, image.YCbCrSubsampleRatio420)
	for name, img := range map[string]image.Image{
		"nrgba64": image.NewNRGBA64(r),
		"rgba64":  image.NewRGBA64(r),
		"gray16":  image.NewGray16(r),
		"cmyk":    image.NewCMYK(r),
		"nycbcra": &image.NYCbCrA{YCbCr: *ycc, A: make([]byte, 1024*1024), AStride: 1024},
		"alpha":   image.NewAlpha(r),
		"rgba":    image.NewRGBA(r),
	} {
		t.Run(name, func(t *testing.T) {
			for _, size := range []int{64, 128} {
				thumb := int64(3 * 4 * size * size)
				if got := allocated(func() { Shrink(img, size, size) }); got > thumb+32<<10 {
					t.Errorf("Shrink(%d×%d) of a 1024×1024 %T allocated %d bytes", size, size, img, got)
				}
			}
		})
	}
}

// The fast path for images read through RGBA64At gives the generic
// per-pixel path's result.
func TestShrinkRGBA64MatchesGeneric(t *testing.T) {
	r := image.Rect(2, 3, 205, 160)
	m := image.NewNRGBA64(r)
	c := image.NewCMYK(r)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			m.SetNRGBA64(x, y, color.NRGBA64{uint16(x * 300), uint16(y * 400), uint16(x * y), uint16(65535 - x*100)})
			c.SetCMYK(x, y, color.CMYK{uint8(x), uint8(y), uint8(x + y), uint8(x * 3)})
		}
	}
	for name, img := range map[string]image.Image{"nrgba64": m, "cmyk": c} {
		fast := Shrink(img, 16, 12)
		slow := Shrink(generic{img}, 16, 12)
		for i := range fast.R {
			for _, p := range [][2]float32{{fast.R[i], slow.R[i]}, {fast.G[i], slow.G[i]}, {fast.B[i], slow.B[i]}} {
				if d := p[0] - p[1]; d > 0.01 || d < -0.01 {
					t.Fatalf("%s sample %d: fast %v, generic %v", name, i, p[0], p[1])
				}
			}
		}
	}
}

// newTestBudget is a Budget whose collections are counted.
func newTestBudget(t *testing.T, size int64) (*Budget, *atomic.Int32) {
	t.Helper()
	b, err := NewBudget(size)
	if err != nil {
		t.Fatal(err)
	}
	var gcs atomic.Int32
	b.gc = func() { gcs.Add(1); runtime.GC() }
	return b, &gcs
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The budget admits in arrival order, refuses when its wait ends, gives a
// released image's bytes back only once the pixels are collected (asking
// for the collection itself when someone waits), and takes back the bytes
// of an image whose holder forgot to release it once it is unreachable.
func TestBudget(t *testing.T) {
	ctx := context.Background()
	t.Run("full: refused after the wait, nothing held", func(t *testing.T) {
		b, _ := newTestBudget(t, 100)
		r1, err := b.acquire(ctx, 60, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.acquire(ctx, 50, 20*time.Millisecond); !errors.Is(err, errBudgetTimeout) {
			t.Fatalf("acquire over the budget = %v, want errBudgetTimeout", err)
		}
		if _, err := b.acquire(ctx, 50, 0); !errors.Is(err, errBudgetTimeout) {
			t.Fatalf("acquire without waiting = %v, want errBudgetTimeout", err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := b.acquire(cctx, 50, time.Minute); !errors.Is(err, context.Canceled) {
			t.Fatalf("acquire with a cancelled context = %v", err)
		}
		if got := b.InUse(); got != 60 {
			t.Fatalf("in use %d after refusals, want 60", got)
		}
		r1.collected()
		if got := b.InUse(); got != 0 {
			t.Fatalf("in use %d, want 0", got)
		}
	})
	t.Run("arrival order", func(t *testing.T) {
		b, _ := newTestBudget(t, 100)
		r1, _ := b.acquire(ctx, 70, 0)
		order := make(chan int64, 2)
		go func() { r, _ := b.acquire(ctx, 80, time.Minute); order <- 80; r.collected() }()
		waitFor(t, "the large waiter", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.waiters.Len() == 1 })
		go func() { r, _ := b.acquire(ctx, 25, time.Minute); order <- 25; r.collected() }()
		waitFor(t, "the small waiter", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.waiters.Len() == 2 })
		// 25 would fit beside 70, but 80 came first; and 80 and 25 do not
		// fit together, so 25 follows 80.
		select {
		case n := <-order:
			t.Fatalf("%d admitted ahead of its turn", n)
		case <-time.After(50 * time.Millisecond):
		}
		r1.collected()
		if a, b := <-order, <-order; a != 80 || b != 25 {
			t.Fatalf("admitted %d then %d, want 80 then 25", a, b)
		}
	})
	t.Run("released bytes count until collected", func(t *testing.T) {
		b, gcs := newTestBudget(t, 100)
		r, _ := b.acquire(ctx, 60, 0)
		pix := make([]byte, 1<<20)
		track(r, &pix[0])
		r.release()
		if got := b.InUse(); got != 60 {
			t.Fatalf("in use %d right after release, want 60 until the pixels are collected", got)
		}
		runtime.KeepAlive(pix)
		pix = nil
		// A waiter that fits once the garbage is gone gets a collection.
		r2, err := b.acquire(ctx, 60, 10*time.Second)
		if err != nil {
			t.Fatalf("acquire with collectable garbage in the way: %v", err)
		}
		if gcs.Load() == 0 {
			t.Error("the budget did not ask for a collection")
		}
		r2.release()
		r2.abandon()
	})
	t.Run("forgotten release", func(t *testing.T) {
		b, _ := newTestBudget(t, 100)
		func() {
			r, _ := b.acquire(ctx, 70, 0)
			pix := make([]byte, 1<<20)
			track(r, &pix[0])
		}()
		waitFor(t, "the unreachable image's bytes", func() bool { runtime.GC(); return b.InUse() == 0 })
	})
	t.Run("no collection when it would not help", func(t *testing.T) {
		b, gcs := newTestBudget(t, 100)
		r, _ := b.acquire(ctx, 90, 0)
		if _, err := b.acquire(ctx, 50, 150*time.Millisecond); !errors.Is(err, errBudgetTimeout) {
			t.Fatal(err)
		}
		if n := gcs.Load(); n != 0 {
			t.Errorf("%d collections asked for with nothing released", n)
		}
		r.collected()
	})
}

// ParseSize reads the sizes flags and environment variables carry.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "256MiB": 256 << 20, "256M": 256 << 20, "1 GiB": 1 << 30, "512kb": 512 << 10, "3G": 3 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5GiB", "12 parsecs", "99999999999GiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}
