package controller

import (
	"strconv"
	"testing"
)

// BenchmarkProgressBeginEnd is what a job that never reports progress
// pays for the progress table: one entry while its request is in flight.
//
//	go test -run '^$' -bench ProgressBeginEnd ./controller/
func BenchmarkProgressBeginEnd(b *testing.B) {
	var pt progressTable
	tasks := make([]*task, 64)
	for i := range tasks {
		tasks[i] = &task{id: "job-" + strconv.Itoa(i), alg: "echo"}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			t := tasks[i%len(tasks)]
			pt.begin(t)
			pt.end(t)
			i++
		}
	})
}
