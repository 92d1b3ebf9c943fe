package replycheck

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func patternSchema(n int, pattern string, salt int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"$comment":"%d","type":"object","properties":{`, salt)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"p%d":{"type":"string","pattern":%q}`, i, pattern)
	}
	b.WriteString(`}}`)
	return []byte(b.String())
}

// The cache is bounded by the estimated heap of what it holds, not by a
// number of entries: ten schemas whose compiled form is large never take
// it past its budget, and the ones in use stay.
func TestSchemaCacheIsBoundedInBytes(t *testing.T) {
	const budget = 4 << 20
	c := NewCache(zerolog.Nop(), budget, 10*time.Second)
	for i := range 10 {
		doc := patternSchema(2, `^[\pL\pN]{1,30}$`, i) // about 1.8 MB estimated
		if _, err := c.get("heavy.json", doc); err != nil {
			t.Fatalf("schema %d: %v", i, err)
		}
		used, n := c.size()
		if used > budget {
			t.Fatalf("after %d schemas the cache holds %d bytes in %d entries, budget %d", i+1, used, n, budget)
		}
	}
	used, n := c.size()
	t.Logf("10 schemas of ~1.8 MB: cache holds %d entries, %d bytes of %d", n, used, budget)
	if _, err := c.get("too.json", patternSchema(6, `^[\pL\pN]{1,30}$`, 99)); err == nil {
		t.Fatal("a schema costlier than the whole budget was compiled")
	}
}

// A compile cannot be interrupted: callers wait at most the timeout, and
// however many give up, at most maxCompiles compiles run at once.
func TestSchemaCompilesAreBoundedAndTimed(t *testing.T) {
	c := NewCache(zerolog.Nop(), 1<<30, 20*time.Millisecond)
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := int64(0)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := c.compiling.Load(); n > peak {
				mu.Lock()
				peak = max(peak, n)
				mu.Unlock()
			}
			time.Sleep(time.Millisecond)
		}
	}()
	errs := make(chan error, 12)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.get("slow.json", patternSchema(400, `^[a-z0-9]{1,40}(-[a-z0-9]{1,40})*$`, i))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	waited := 0
	for err := range errs {
		if err != nil {
			waited++
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for c.compiling.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("compiles never ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("12 slow schemas: %d callers went on without waiting for the compile; peak %d compiles at once", waited, peak)
	if peak > maxCompiles {
		t.Fatalf("%d compiles at once, want at most %d", peak, maxCompiles)
	}
	if waited == 0 {
		t.Fatal("every caller waited for its compile: no timeout")
	}
}
