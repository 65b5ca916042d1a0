package handlers

import (
	"encoding/json"
	"testing"
)

func TestTruthyFollowsPHPEmpty(t *testing.T) {
	tests := []struct {
		details string
		want    bool
	}{
		{``, false},
		{`null`, false},
		{`false`, false},
		{`0`, false},
		{`-0`, false},
		{`0.0`, false},
		{`0e10`, false},
		{`""`, false},
		{`"0"`, false},
		{`[]`, false},
		{` [ ] `, false},
		{`{}`, false},
		{`true`, true},
		{`1`, true},
		{`-1.5`, true},
		{`1e400`, true},
		{`"a"`, true},
		{`"00"`, true},
		{`"0.0"`, true},
		{`" "`, true},
		{`"false"`, true},
		{`[null]`, true},
		{`{"a":0}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.details, func(t *testing.T) {
			if got := Truthy(json.RawMessage(tt.details)); got != tt.want {
				t.Fatalf("Truthy(%s) = %v, want %v", tt.details, got, tt.want)
			}
		})
	}
}
