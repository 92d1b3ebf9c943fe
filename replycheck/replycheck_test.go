package replycheck

import (
	"strconv"
	"strings"
	"testing"

	"github.com/pnpworker/pnpworker/protocol"
)

func TestProtocolCode(t *testing.T) {
	tests := []struct {
		code, want int
		retryable  bool
	}{
		{400, 400, false}, {422, 422, false}, {503, 503, true},
		{502, 502, true},
		{409, 400, false}, {418, 400, false}, {501, 500, true}, {0, 500, true}, {302, 500, true},
	}
	for _, tt := range tests {
		got := ProtocolCode(&protocol.Error{Code: tt.code, Message: "m"})
		if got.Code != tt.want || got.Retryable() != tt.retryable {
			t.Errorf("ProtocolCode(%d) = %d (retryable %v), want %d (%v)", tt.code, got.Code, got.Retryable(), tt.want, tt.retryable)
		}
		if tt.code != tt.want && !strings.Contains(got.Message, strconv.Itoa(tt.code)) {
			t.Errorf("ProtocolCode(%d) message %q lost the original code", tt.code, got.Message)
		}
	}
}
