package replycheck

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
)

// wordCountInput is the input schema of the benchmarks' word count
// responders (harness/bench), which a product package may not import.
const wordCountInput = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "text": {"type": "string", "minLength": 1, "maxLength": 100000}
  },
  "required": ["text"],
  "additionalProperties": false
}`

// BenchmarkSchemaCacheValidate prices the input check on the job path
// alone: one job body against the registered schema, from every
// processor at once (the controller's workers share one compiled schema).
// The schemas are those of the controller benchmark and of bench_word_count.
func BenchmarkSchemaCacheValidate(b *testing.B) {
	for _, tc := range []struct {
		name, schema, body string
	}{
		{"controller_bench", `{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}`, `{"n":12345}`},
		{"word_count", wordCountInput, `{"text":"the quick brown fox jumps over the lazy dog"}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := NewCache(zerolog.Nop(), DefaultCacheBytes, 10*time.Second)
			regs := []discovery.Registration{{Algorithm: "bench", Instance: "a", InputSchema: json.RawMessage(tc.schema)}}
			body := []byte(tc.body)
			if err := c.Validate(regs, body); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := c.Validate(regs, body); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
