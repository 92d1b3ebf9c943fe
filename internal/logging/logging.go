// Package logging builds the zerolog logger every pnp command uses: readable
// console output on a terminal, JSON lines otherwise.
package logging

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/termsafe"
)

// text is how the console writer shows a value: nil as nothing.
func text(i any) string {
	if i == nil {
		return ""
	}
	return fmt.Sprint(i)
}

// New returns a logger writing to w at level ("trace", "debug", "info",
// "warn", "error"). When w is a terminal the output is colored console text.
func New(w io.Writer, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("invalid log level %q (want trace, debug, info, warn or error)", level)
	}
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		// Field values and messages can quote what NATS sent (a key, a
		// runner's error): show control characters as escapes.
		w = zerolog.ConsoleWriter{
			Out:                 f,
			TimeFormat:          time.TimeOnly,
			FormatMessage:       func(i any) string { return termsafe.String(text(i)) },
			FormatFieldValue:    func(i any) string { return termsafe.String(text(i)) },
			FormatErrFieldValue: func(i any) string { return termsafe.String(text(i)) },
		}
	} else {
		w = safeJSON{w}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// safeJSON escapes in each JSON log line the characters zerolog leaves raw
// although a terminal acts on them (DEL, C1 and bidi controls), for logs
// that end up on a terminal after all (less, tail). zerolog writes one
// whole line per Write.
type safeJSON struct{ w io.Writer }

func (s safeJSON) Write(p []byte) (int, error) {
	if _, err := s.w.Write(termsafe.JSON(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
