package main

import (
	"testing"

	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"256M", 256 * layout.MiB, true}, {"6G", 6 * layout.GiB, true}, {"512", 512 * layout.MiB, true},
		{"1024K", layout.MiB, true}, {"2GiB", 2 * layout.GiB, true}, {"64mb", 64 * layout.MiB, true}, {"1T", 1024 * layout.GiB, true},
		{"", 0, false}, {"abc", 0, false}, {"-5M", 0, false}, {"1.5G", 0, false}, {"99999999999999999999T", 0, false},
	} {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v", tt.in, got, err)
		}
	}
}
