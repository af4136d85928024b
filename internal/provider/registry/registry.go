// Package registry lists the providers inboxd serves. The router, the metrics, the
// processor's normalizers, `inboxd sign`, the configuration and the documentation's
// tests all loop over All; adding a provider is its package plus one line here
// (docs/architecture.md).
package registry

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
	"inboxd/internal/provider/meta"
	"inboxd/internal/provider/telnyx"
	"inboxd/internal/provider/twilio"
)

// All is every provider, in the order they are documented.
var All = []*provider.Provider{
	generic.Provider,
	twilio.Provider,
	meta.Provider,
	telnyx.Provider,
}

// Names lists the providers' names.
func Names() []string {
	names := make([]string, len(All))
	for i, p := range All {
		names[i] = p.Name
	}
	return names
}

// Lookup returns the provider called name (or, for a stored name such as
// "generic:acme", the provider it belongs to), or an error that lists the valid names.
func Lookup(name string) (*provider.Provider, error) {
	for _, p := range All {
		if p.Name == provider.Base(name) {
			return p, nil
		}
	}
	if name == "" {
		return nil, fmt.Errorf("a provider is required: one of %s", strings.Join(Names(), ", "))
	}
	return nil, fmt.Errorf("unknown provider %q: want one of %s", name, strings.Join(Names(), ", "))
}

// Known reports whether name is a provider's name, or a stored name of one.
func Known(name string) bool { return slices.Contains(Names(), provider.Base(name)) }

// Normalizers maps each provider's name to its Normalize.
func Normalizers() map[string]provider.Normalizer {
	m := make(map[string]provider.Normalizer, len(All))
	for _, p := range All {
		m[p.Name] = p.Normalize
	}
	return m
}

// Open configures every provider from c. A provider whose settings are unset is
// returned without a webhook, with a hint naming what enables it; every invalid
// setting is reported, joined in one error.
func Open(c provider.Config) ([]provider.Endpoint, error) {
	var endpoints []provider.Endpoint
	var errs []error
	for _, p := range All {
		w, err := p.Open(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		join := " or "
		if p.EnableAll {
			join = " and "
		}
		names := make([]string, len(p.Enable))
		for i, key := range p.Enable {
			names[i] = c.SettingName(key)
		}
		endpoints = append(endpoints, provider.Endpoint{Provider: p, Webhook: w, Hint: "set " + strings.Join(names, join)})
	}
	return endpoints, errors.Join(errs...)
}
