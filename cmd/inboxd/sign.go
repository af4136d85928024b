package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"inboxd/internal/provider"
	"inboxd/internal/provider/registry"
)

// signCmd signs a payload the way a provider does and prints a curl command line that
// posts it (or, with --headers, just the headers), so that an endpoint can be tried by
// hand. Every provider of the registry can sign (provider.Provider.Sign).
func signCmd(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inboxd sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	names := strings.Join(registry.Names(), ", ")
	prov := fs.String("provider", "generic", names+"; a named sender as provider:NAME (generic:acme), signed with its own key")
	secret := fs.String("secret", "", "the signing secret or private key (default: the first value of the provider's signing setting, e.g. INBOX_GENERIC_SECRETS; none where the settings are public keys);\n"+
		"docs/webhooks.md says what each provider signs with")
	id := fs.String("id", fmt.Sprintf("msg_%d", time.Now().UnixNano()), "the delivery's id where the scheme has one, and the example's message id")
	base := fs.String("url", or(getenv(settingName("PUBLIC_URL")), "http://localhost:8080"), "inboxd's base URL, or the webhook's own (Twilio signs it: it must be INBOX_PUBLIC_URL)")
	file := fs.String("file", "", "payload file ('-' for stdin; default: an example inbound message)")
	headersOnly := fs.Bool("headers", false, "print only the headers")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: inboxd sign [flags]\n\nPrints a signed curl command for /webhooks/<provider> (%s).\n", names)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	p, err := registry.Lookup(*prov)
	if err != nil {
		return usageError{fmt.Errorf("--provider: %w", err)}
	}
	from := "--secret"
	_, sender, named := strings.Cut(*prov, ":")
	switch {
	case named && p.SenderSecret == nil:
		return usageError{fmt.Errorf("--provider %s: %s has no named senders", printable(*prov), p.Name)}
	case *secret != "":
	case named:
		if *secret, err = p.SenderSecret(settingsOf(p, getenv), sender); err != nil {
			return usageError{err}
		}
		from = fmt.Sprintf("sender %s's key", sender)
	case p.SignWith != "":
		*secret, from = firstOf(getenv(settingName(p.SignWith))), settingName(p.SignWith)+"'s first value"
	}
	switch {
	case *secret == "" && p.SignWith == "":
		return usageError{fmt.Errorf("--secret is required for %s: its settings hold public keys, which check a signature but cannot make one; pass the private key (docs/webhooks.md says what each provider signs with)", p.Name)}
	case *secret == "" && p.SenderSecret != nil:
		return usageError{fmt.Errorf("no secret: pass --secret, set %s, or name a sender: --provider %s:NAME", settingName(p.SignWith), p.Name)}
	case *secret == "":
		return usageError{fmt.Errorf("no secret: pass --secret or set %s", settingName(p.SignWith))}
	}
	body, err := readPayload(*file)
	if err != nil {
		return usageError{fmt.Errorf("--file: %w", err)}
	}
	if body == nil {
		body = p.Example(*id, time.Now())
	}
	endpoint, err := webhookURL(*base, p.Name)
	if err != nil {
		return usageError{err}
	}
	headers, err := p.Sign(*secret, endpoint, *id, body, time.Now())
	if err != nil {
		return usageError{fmt.Errorf("%s cannot sign: %w", from, err)}
	}
	contentType := headers.Get("Content-Type")
	headers.Del("Content-Type")
	keys := make([]string, 0, len(headers))
	for k := range headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if *headersOnly {
		for _, k := range keys {
			fmt.Fprintf(stdout, "%s: %s\n", k, headers.Get(k))
		}
		return nil
	}
	fmt.Fprintf(stdout, "curl -sS %s -H 'content-type: %s'", endpoint, contentType)
	for _, k := range keys {
		fmt.Fprintf(stdout, " -H '%s: %s'", k, headers.Get(k))
	}
	fmt.Fprintf(stdout, " --data-binary %s\n", shellQuote(string(body)))
	return nil
}

// settingsOf reads p's settings from the environment, as serve does.
func settingsOf(p *provider.Provider, getenv func(string) string) provider.Config {
	values := map[string]string{}
	for _, st := range p.Settings {
		values[st.Key] = getenv(settingName(st.Key))
	}
	return provider.Config{Values: values, Name: settingName}
}

// webhookURL is the webhook of the provider called name under base. A base that
// already ends in a webhook's path (copied from a provider's console, say) is the
// webhook itself when it is this provider's, and refused when it is another's.
func webhookURL(base, name string) (string, error) {
	base = strings.TrimRight(base, "/")
	for _, other := range registry.Names() {
		if root, ok := strings.CutSuffix(base, "/webhooks/"+other); ok {
			if other != name {
				return "", fmt.Errorf("--url %s is the %s webhook, not %s's: pass inboxd's base URL (%s)", base, other, name, root)
			}
			return base, nil
		}
	}
	return base + "/webhooks/" + name, nil
}

// readPayload returns the payload to sign: a file, stdin, or nil for the provider's
// example (whose message id is --id, so that every signed example is a new message
// rather than a redelivery).
func readPayload(file string) ([]byte, error) {
	switch file {
	case "-":
		return io.ReadAll(os.Stdin)
	case "":
		return nil, nil
	default:
		return os.ReadFile(file)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func firstOf(csv string) string { return strings.TrimSpace(strings.Split(csv, ",")[0]) }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
