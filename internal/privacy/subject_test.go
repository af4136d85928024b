package privacy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"inboxd/internal/readmodel"
	"inboxd/internal/redact"
)

// FuzzNewSubject: an address as a user typed it is refused as a bad request, or
// becomes a subject whose address is the stored form and whose forms are sorted,
// distinct and include it (and, under a hashing policy, its hash). A subject made
// again from its own address (as an export shows it) is the same subject, so an
// erasure asked for with what the export printed finds the same rows.
func FuzzNewSubject(f *testing.F) {
	policy, err := redact.NewPolicy(nil, nil, []byte("fuzz-key"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(" +1 (555) 222-3333 ", "", true)
	f.Add("whatsapp:+15552223333", "twilio", true)
	f.Add("US.13491208655302741918", "meta", false)
	f.Add("15552223333", "generic:acme", true)
	f.Add("", "", false)
	f.Add("+1555", "smoke-signals", false)
	f.Fuzz(func(t *testing.T, address, providerName string, hashing bool) {
		p := policy
		if !hashing {
			p = nil
		}
		s, err := NewSubject(address, providerName, p)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("NewSubject(%q, %q) = %v, not a bad request", address, providerName, err)
			}
			return
		}
		if s.Address != readmodel.NormalizeContact(strings.TrimSpace(address)) || s.Provider != providerName {
			t.Fatalf("NewSubject(%q, %q) = %+v: not the stored form of the address", address, providerName, s)
		}
		if !slices.IsSorted(s.Forms) || len(slices.Compact(slices.Clone(s.Forms))) != len(s.Forms) || !slices.Contains(s.Forms, s.Address) {
			t.Fatalf("forms %q: want sorted, distinct, holding %q", s.Forms, s.Address)
		}
		if h, ok := p.Hashed(s.Address); ok && !slices.Contains(s.Forms, h) {
			t.Fatalf("forms %q lack the address's hash %q", s.Forms, h)
		}
		again, err := NewSubject(s.Address, providerName, p)
		if err != nil || !slices.Equal(again.Forms, s.Forms) || again.Address != s.Address {
			t.Fatalf("NewSubject(%q) again = %+v, %v; want %+v", s.Address, again, err, s)
		}
	})
}
