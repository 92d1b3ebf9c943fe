// Package metricstest scrapes a /metrics endpoint over HTTP and reads
// values from the parsed Prometheus text exposition, for tests.
package metricstest

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is one parsed scrape, by metric family name.
type Families map[string]*dto.MetricFamily

// Scrape GETs url and parses the text exposition format; it fails the test
// on any error, including a body that does not parse.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: parse: %v", url, err)
	}
	return fams
}

// Find returns the sample of family name whose labels include every
// "key=value" pair given, or nil. More than one match is an error.
func (f Families) Find(t testing.TB, name string, labels ...string) *dto.Metric {
	t.Helper()
	fam := f[name]
	if fam == nil {
		return nil
	}
	var found *dto.Metric
	for _, m := range fam.GetMetric() {
		if match(m, labels) {
			if found != nil {
				t.Fatalf("%s%v: more than one sample matches", name, labels)
			}
			found = m
		}
	}
	return found
}

func match(m *dto.Metric, labels []string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		if have[k] != v {
			return false
		}
	}
	return true
}

// Value returns the value of a counter, gauge or untyped sample (the
// sample count of a histogram), or -1 when no sample matches.
func (f Families) Value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	m := f.Find(t, name, labels...)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return -1
}

// Histogram returns the histogram sample, failing the test when there is
// none or it is not well formed: cumulative bucket counts that never
// decrease, the last at most the sample count, and a sum that is not
// negative.
func (f Families) Histogram(t testing.TB, name string, labels ...string) *dto.Histogram {
	t.Helper()
	m := f.Find(t, name, labels...)
	if m == nil || m.Histogram == nil {
		t.Fatalf("no histogram %s%v; have:\n%s", name, labels, f.Names())
	}
	h := m.Histogram
	prev := uint64(0)
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() < prev {
			t.Fatalf("%s%v: bucket le=%g count %d below the previous %d", name, labels, b.GetUpperBound(), b.GetCumulativeCount(), prev)
		}
		prev = b.GetCumulativeCount()
	}
	if prev > h.GetSampleCount() || h.GetSampleSum() < 0 {
		t.Fatalf("%s%v: buckets up to %d, count %d, sum %g", name, labels, prev, h.GetSampleCount(), h.GetSampleSum())
	}
	return h
}

// Names lists the families, one per line, for failure messages.
func (f Families) Names() string {
	var names []string
	for n, fam := range f {
		names = append(names, fmt.Sprintf("%s (%d samples)", n, len(fam.GetMetric())))
	}
	sort.Strings(names)
	return strings.Join(names, "\n")
}
