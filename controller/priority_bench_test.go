package controller

import "testing"

// BenchmarkWorkerHandoff measures what priorities add to handing one job
// of priority normal from a puller to a worker: a plain channel receive,
// as workers took jobs before priorities, against Controller.next, which
// looks at the three queues by its turn first. One puller, one worker, an
// unbuffered channel, as in the controller:
//
//	go test -run '^$' -bench WorkerHandoff -count 5 ./controller/
func BenchmarkWorkerHandoff(b *testing.B) {
	j := &job{}
	b.Run("channel", func(b *testing.B) {
		work := make(chan *job)
		go func() {
			for range b.N {
				work <- j
			}
			close(work)
		}()
		n := 0
		for range work {
			n++
		}
		if n != b.N {
			b.Fatalf("%d jobs, want %d", n, b.N)
		}
	})
	b.Run("priorities", func(b *testing.B) {
		c := &Controller{work: make(chan *job), workHigh: make(chan *job), workLow: make(chan *job)}
		go func() {
			for range b.N {
				c.work <- j
			}
			close(c.work)
			close(c.workHigh)
			close(c.workLow)
		}()
		n, turn := 0, 0
		for {
			if _, ok := c.next(&turn); !ok {
				break
			}
			n++
		}
		if n != b.N {
			b.Fatalf("%d jobs, want %d", n, b.N)
		}
	})
}
