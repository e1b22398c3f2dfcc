package snapshot

import (
	"crypto/sha256"
	"testing"
)

// FuzzDecode: whatever the state file holds, Decode returns a File or an
// error, never panics, and what it returns encodes back to the same bytes.
// The checksum would make random mutations fail early, so each input is
// also tried with its checksum made valid: the payload decoder itself is
// what is fuzzed.
func FuzzDecode(f *testing.F) {
	f.Add(Encode(sample()))
	f.Add(Encode(&File{Meta: Meta{Point: PointRunning, CPUs: 1, MemSize: 4096}, VCPUs: []VCPU{{}}, Memory: Memory{Size: 4096, Regions: []Region{{Size: 4096}}}}))
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(b []byte) {
			file, err := Decode(b)
			if err != nil {
				return
			}
			if got := Encode(file); string(got) != string(b) {
				t.Fatalf("decoded state re-encodes to %d other bytes (input %d)", len(got), len(b))
			}
		}
		check(b)
		if len(b) >= headerLen+sumLen {
			fixed := append([]byte(nil), b...)
			body := fixed[:len(fixed)-sumLen]
			sum := sha256.Sum256(body)
			copy(fixed[len(body):], sum[:])
			check(fixed)
		}
	})
}
