// Package redact rewrites stored payloads under a policy: rules that remove, mask or
// hash fields, applied after a webhook's signature is checked and before its events
// are committed, so that the redacted value is the only one ever written (to the
// table, the WAL, backups and replicas), and what is normalized from it carries it too
// (docs/privacy.md).
//
// A rule is "provider:selector=action". The selector is a JSON Pointer (RFC 6901)
// into the stored payload, where a segment "*" matches any key or index
// ("/entry/*/changes/*/value/contacts/*/profile/name"); a selector without a leading
// "/" is a top-level field name, which is how a form-encoded provider's fields are
// stored (Twilio: "FromZip"). The actions: remove (the field is gone), mask (its value
// becomes "[redacted]"), hash (its value becomes "hmac-sha256:<hex>" of the value,
// keyed: the same phone number still groups into one conversation, and is not stored).
package redact

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The actions.
const (
	Remove = "remove"
	Mask   = "mask"
	Hash   = "hash"
)

// Masked is what mask writes.
const Masked = "[redacted]"

// Rule is one parsed rule.
type Rule struct {
	Provider string
	Path     []string // the pointer's segments, unescaped; "*" matches any
	Action   string
	Text     string // as written, for errors
}

// Protection says what a provider's payload cannot do without: for each selector,
// the actions it tolerates (none: an id the dedupe key or a status's match needs;
// hash: an address normalization needs to group conversations, which a keyed hash
// still does).
type Protection map[string][]string

// Policy is the rules in force, by provider.
type Policy struct {
	rules map[string][]Rule
	key   []byte
}

// ParseRule parses "provider:selector=action".
func ParseRule(text string) (Rule, error) {
	prov, rest, ok := strings.Cut(strings.TrimSpace(text), ":")
	selector, action, ok2 := strings.Cut(rest, "=")
	r := Rule{Provider: prov, Action: strings.TrimSpace(action), Text: strings.TrimSpace(text)}
	switch {
	case !ok || !ok2 || prov == "" || selector == "":
		return r, fmt.Errorf("rule %q: want provider:selector=action, such as twilio:FromZip=remove", r.Text)
	case r.Action != Remove && r.Action != Mask && r.Action != Hash:
		return r, fmt.Errorf("rule %q: the action must be remove, mask or hash", r.Text)
	}
	r.Path = Pointer(strings.TrimSpace(selector))
	return r, nil
}

// Pointer splits a selector into unescaped segments (RFC 6901: ~1 is "/", ~0 is
// "~"); a selector without a leading "/" is one top-level field name.
func Pointer(selector string) []string {
	if !strings.HasPrefix(selector, "/") {
		return []string{selector}
	}
	segs := strings.Split(selector[1:], "/")
	for i, s := range segs {
		segs[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return segs
}

// escape writes a key as a pointer segment (RFC 6901): the inverse of Pointer's
// unescaping.
func escape(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}

// NewPolicy checks the rules against what each provider's payload cannot do without
// (protect, by provider) and returns the policy; key is the hash action's key (a rule
// that hashes needs one). Every refused rule is reported.
func NewPolicy(rules []Rule, protect map[string]Protection, key []byte) (*Policy, error) {
	p := &Policy{rules: map[string][]Rule{}, key: key}
	var errs []error
	for _, r := range rules {
		prot, known := protect[r.Provider]
		if !known {
			errs = append(errs, fmt.Errorf("rule %q: no provider is called %q", r.Text, r.Provider))
			continue
		}
		if r.Action == Hash && len(key) == 0 {
			errs = append(errs, fmt.Errorf("rule %q: hash needs a key, and none is set", r.Text))
		}
		for selector, allowed := range prot {
			if overlaps(r.Path, Pointer(selector)) && !slices.Contains(allowed, r.Action) {
				errs = append(errs, fmt.Errorf("rule %q would %s %s, which %s cannot do without (the dedupe key or normalization needs it)%s",
					r.Text, r.Action, selector, r.Provider, tolerated(allowed)))
				break
			}
		}
		p.rules[r.Provider] = append(p.rules[r.Provider], r)
	}
	return p, errors.Join(errs...)
}

func tolerated(allowed []string) string {
	if len(allowed) == 0 {
		return ""
	}
	return "; " + strings.Join(allowed, " or ") + " it instead"
}

// overlaps: a rule's path touches a protected one: the same field (wildcards match
// anything), or a field that contains it.
func overlaps(rule, protected []string) bool {
	if len(rule) > len(protected) {
		return false
	}
	for i, seg := range rule {
		if seg != "*" && protected[i] != "*" && seg != protected[i] {
			return false
		}
	}
	return true
}

// Rules reports whether the policy has rules for provider.
func (p *Policy) Rules(provider string) bool { return p != nil && len(p.rules[provider]) > 0 }

// Apply returns payload with provider's rules applied, and the fields it changed (as
// pointers). A payload that is not JSON, or that no rule touches, is returned as is.
func (p *Policy) Apply(provider string, payload []byte) ([]byte, []string) {
	if !p.Rules(provider) {
		return payload, nil
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber() // numbers keep their digits
	var doc any
	if dec.Decode(&doc) != nil {
		return payload, nil
	}
	var changed []string
	for _, r := range p.rules[provider] {
		doc = p.apply(doc, r.Path, r.Action, "", &changed)
	}
	if len(changed) == 0 {
		return payload, nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return payload, nil
	}
	return out, changed
}

// apply applies action at path below v (at pointer at), recording what it changed.
func (p *Policy) apply(v any, path []string, action, at string, changed *[]string) any {
	if len(path) == 0 {
		return v
	}
	seg, rest := path[0], path[1:]
	switch node := v.(type) {
	case map[string]any:
		for k, child := range node {
			if seg != "*" && seg != k {
				continue
			}
			here := at + "/" + escape(k)
			if len(rest) > 0 {
				node[k] = p.apply(child, rest, action, here, changed)
				continue
			}
			if action == Remove {
				delete(node, k)
			} else if node[k] = p.value(action, child); node[k] == child {
				continue // already so: applying a policy twice changes nothing
			}
			*changed = append(*changed, here)
		}
	case []any:
		for i, child := range node {
			if seg != "*" && seg != fmt.Sprint(i) {
				continue
			}
			here := fmt.Sprintf("%s/%d", at, i)
			if len(rest) > 0 {
				node[i] = p.apply(child, rest, action, here, changed)
				continue
			}
			if node[i] = p.value(action, child); node[i] == child { // an array keeps its length: remove masks
				continue
			}
			*changed = append(*changed, here)
		}
	}
	return v
}

// value is what mask or hash writes in place of v. A value already redacted stays as
// it is (a hash is not hashed again), so that rewriting stored payloads under a policy
// is idempotent.
func (p *Policy) value(action string, v any) any {
	if s, ok := v.(string); ok && (s == Masked || strings.HasPrefix(s, HashPrefix)) {
		return v
	}
	if action != Hash {
		return Masked
	}
	var text string
	switch x := v.(type) {
	case string:
		text = x
	default:
		b, _ := json.Marshal(x)
		text = string(b)
	}
	return HashPrefix + p.hex(text)
}

// HashPrefix starts every hashed value.
const HashPrefix = "hmac-sha256:"

// Hashed returns what a hash rule writes in place of text, and false when the policy
// has no key (no hash rule can be in force).
func (p *Policy) Hashed(text string) (string, bool) {
	if p == nil || len(p.key) == 0 {
		return "", false
	}
	return HashPrefix + p.hex(text), true
}

// IsRedacted reports whether a stored value is what a rule wrote: the mask, a hash,
// or a hash's hex alone (what a provider that reads "kind:value" addresses keeps of
// a hashed one, as Twilio's "whatsapp:+1555…" parsing does).
func IsRedacted(v string) bool {
	if v == Masked || strings.HasPrefix(v, HashPrefix) {
		return true
	}
	if len(v) != sha256.Size*2 {
		return false
	}
	_, err := hex.DecodeString(v)
	return err == nil && strings.ToLower(v) == v
}

// hex is the keyed hash of text, in hex.
func (p *Policy) hex(text string) string {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte(text))
	return hex.EncodeToString(m.Sum(nil))
}
