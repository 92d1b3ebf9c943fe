package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// putRecord stores a result record for job id as the controller writes it.
func putRecord(t testing.TB, s *Store, id, alg string, st Status, submitted time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Results().Put(ctx, id, recordJSON(id, alg, st, submitted)); err != nil {
		t.Fatal(err)
	}
}

func recordJSON(id, alg string, st Status, submitted time.Time) []byte {
	ts := submitted.UTC().Format(time.RFC3339Nano)
	extra := ""
	switch st {
	case StatusSucceeded:
		extra = `,"output":{"big":"` + id + `"},"finished_at":"` + ts + `","duration_ms":1`
	case StatusFailed:
		extra = `,"error":{"code":422,"message":"no"},"finished_at":"` + ts + `","duration_ms":1`
	case StatusRetrying:
		extra = `,"error":{"code":504,"message":"slow"},"next_attempt_at":"` + ts + `"`
	}
	return fmt.Appendf(nil, `{"job_id":%q,"algorithm":%q,"status":%q%s,"attempts":1,"submitted_at":%q,"started_at":%q}`, id, alg, st, extra, ts, ts)
}

type written struct {
	id, alg string
	st      Status
	at      time.Time
}

// TestListJobs pages through records written in a known order, with and
// without filters, and checks each page against the order of the writes:
// newest first, every live record once, rewrites at the front, deletes
// and corrupt records left out.
func TestListJobs(t *testing.T) {
	s := provision(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := time.Now().Add(-time.Hour).UTC()
	var order []written // the last write of each key, oldest first
	write := func(id, alg string, st Status, at time.Time) {
		putRecord(t, s, id, alg, st, at)
		order = slices.DeleteFunc(order, func(w written) bool { return w.id == id })
		order = append(order, written{id, alg, st, at})
	}
	algs := []string{"alpha", "beta", "gamma"}
	statuses := []Status{StatusSucceeded, StatusFailed, StatusRetrying, StatusSucceeded}
	for i := range 600 {
		write(fmt.Sprintf("job-%03d", i), algs[i%3], statuses[i%4], base.Add(time.Duration(i)*time.Second))
	}
	// Retried jobs finish later: their records move to the front.
	for i := 0; i < 600; i += 50 {
		write(fmt.Sprintf("job-%03d", i), algs[i%3], StatusSucceeded, base.Add(time.Duration(i)*time.Second))
	}
	// A deleted record and a corrupt one are never listed.
	if err := s.Results().Delete(ctx, "job-599"); err != nil {
		t.Fatal(err)
	}
	order = slices.DeleteFunc(order, func(w written) bool { return w.id == "job-599" })
	if _, err := s.Results().Put(ctx, "forged", recordJSON("someone-else", "alpha", StatusSucceeded, base)); err != nil {
		t.Fatal(err)
	}

	want := func(keep func(written) bool) []string {
		var ids []string
		for i := len(order) - 1; i >= 0; i-- {
			if keep(order[i]) {
				ids = append(ids, order[i].id)
			}
		}
		return ids
	}
	all := func(o ListOptions) []string {
		var ids []string
		for pages := 0; ; pages++ {
			if pages > 1000 {
				t.Fatalf("%+v: no end of pages", o)
			}
			p, err := s.ListJobs(ctx, o)
			if err != nil {
				t.Fatalf("%+v: %v", o, err)
			}
			limit := o.Limit
			if limit == 0 {
				limit = DefaultListLimit
			}
			if len(p.Jobs) > limit {
				t.Fatalf("%+v: page of %d", o, len(p.Jobs))
			}
			for _, r := range p.Jobs {
				if len(r.Output) != 0 {
					t.Fatalf("%s: a listing returned the output %s", r.JobID, r.Output)
				}
				ids = append(ids, r.JobID)
			}
			if p.Next == "" {
				return ids
			}
			o.Cursor = p.Next
		}
	}
	since := base.Add(400 * time.Second)
	for _, tc := range []struct {
		name string
		opts ListOptions
		keep func(written) bool
	}{
		{"everything", ListOptions{}, func(written) bool { return true }},
		{"small pages", ListOptions{Limit: 7}, func(written) bool { return true }},
		{"one page", ListOptions{Limit: MaxListLimit}, func(written) bool { return true }},
		{"algorithm", ListOptions{Algorithm: "beta", Limit: 40}, func(w written) bool { return w.alg == "beta" }},
		{"status", ListOptions{Status: StatusRetrying, Limit: 25}, func(w written) bool { return w.st == StatusRetrying }},
		{"both", ListOptions{Algorithm: "gamma", Status: StatusSucceeded}, func(w written) bool { return w.alg == "gamma" && w.st == StatusSucceeded }},
		{"since", ListOptions{Since: since, Limit: 30}, func(w written) bool { return !w.at.Before(since) }},
		{"unknown algorithm", ListOptions{Algorithm: "delta"}, func(w written) bool { return false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, exp := all(tc.opts), want(tc.keep)
			if !slices.Equal(got, exp) {
				t.Errorf("listed %d jobs %v\nwant %d jobs %v", len(got), got, len(exp), exp)
			}
		})
	}

	// The first page without filters is the newest records, and a page
	// of Limit ends with a cursor.
	p, err := s.ListJobs(ctx, ListOptions{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Jobs) != 3 || p.Jobs[0].JobID != "job-550" || p.Next == "" {
		t.Errorf("first page %+v; want job-550 first and a cursor", p)
	}
	// A page goes on below its cursor even after new records are
	// written: no job shows twice.
	before := time.Now()
	write("job-new", "alpha", StatusSucceeded, time.Now())
	// Since stops at the first record written before it.
	if recent, err := s.ListJobs(ctx, ListOptions{Since: before}); err != nil || len(recent.Jobs) != 1 || recent.Jobs[0].JobID != "job-new" || recent.Scanned != 1 {
		t.Errorf("since the last write: %+v, %v; want job-new alone, one record read", recent, err)
	}
	p2, err := s.ListJobs(ctx, ListOptions{Limit: 3, Cursor: p.Next})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p2.Jobs {
		for _, q := range p.Jobs {
			if r.JobID == q.JobID || r.JobID == "job-new" {
				t.Errorf("job %s listed again on the next page", r.JobID)
			}
		}
	}
}

func TestListJobsEmptyBucket(t *testing.T) {
	s := provision(t)
	p, err := s.ListJobs(context.Background(), ListOptions{})
	if err != nil || len(p.Jobs) != 0 || p.Next != "" {
		t.Errorf("empty bucket: %+v, %v", p, err)
	}
}

// Every bad option is named, with what is wrong with it.
func TestListJobsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts ListOptions
		want []string // option names
	}{
		{"algorithm", ListOptions{Algorithm: "Bad Name"}, []string{"algorithm"}},
		{"status", ListOptions{Status: "done"}, []string{"status"}},
		{"negative limit", ListOptions{Limit: -1}, []string{"limit"}},
		{"huge limit", ListOptions{Limit: MaxListLimit + 1}, []string{"limit"}},
		{"cursor", ListOptions{Cursor: "abc"}, []string{"cursor"}},
		{"zero cursor", ListOptions{Cursor: encodeCursor(0)}, []string{"cursor"}},
		{"several", ListOptions{Algorithm: "x-y", Status: "?", Limit: 5000}, []string{"algorithm", "status", "limit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if !errors.Is(err, ErrBadOption) {
				t.Fatalf("%+v: %v; want ErrBadOption", tc.opts, err)
			}
			var names []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap()[1].(interface{ Unwrap() []error }).Unwrap() {
				var oe *OptionError
				if errors.As(e, &oe) && oe.Message != "" {
					names = append(names, oe.Option)
				}
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("%+v: options named %v (%v); want %v", tc.opts, names, err, tc.want)
			}
		})
	}
	if err := (ListOptions{Algorithm: "ok", Status: StatusFailed, Limit: 10, Cursor: encodeCursor(5)}).Validate(); err != nil {
		t.Errorf("good options refused: %v", err)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-04-30T10:00:00Z": time.Date(2026, 4, 30, 10, 0, 0, 0, time.UTC),
		"90m":                  now.Add(-90 * time.Minute),
		"0s":                   now,
	} {
		if got, err := ParseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"yesterday", "-1h", "2026-13-01", ""} {
		var oe *OptionError
		if _, err := ParseSince(in, now); !errors.As(err, &oe) || oe.Option != "since" {
			t.Errorf("ParseSince(%q) = %v; want an error naming since", in, err)
		}
	}
}
