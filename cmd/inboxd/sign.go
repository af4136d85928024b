package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"inboxd/internal/ingest"
)

// signCmd signs a payload the way a provider does and prints a curl command line that
// posts it (or, with --headers, just the headers), so that an endpoint can be tried by
// hand: Standard Webhooks (generic, the default), Twilio or Meta.
func signCmd(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inboxd sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	prov := fs.String("provider", "generic", "generic, twilio or meta")
	secret := fs.String("secret", "", "the secret (default: the provider's variable: INBOX_GENERIC_SECRETS, INBOX_TWILIO_AUTH_TOKEN or INBOX_META_APP_SECRET, first value)")
	id := fs.String("id", fmt.Sprintf("msg_%d", time.Now().UnixNano()), "generic: webhook-id; all: the example's message id")
	base := fs.String("url", strings.TrimRight(or(getenv("INBOX_PUBLIC_URL"), "http://localhost:8080"), "/"), "inboxd's base URL (Twilio signs it: it must be INBOX_PUBLIC_URL)")
	file := fs.String("file", "", "payload file ('-' for stdin; default: an example inbound message)")
	headersOnly := fs.Bool("headers", false, "print only the headers")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: inboxd sign [flags]\n\nPrints a signed curl command for /webhooks/generic, /webhooks/twilio or /webhooks/meta.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	env := map[string]string{"generic": "INBOX_GENERIC_SECRETS", "twilio": "INBOX_TWILIO_AUTH_TOKEN", "meta": "INBOX_META_APP_SECRET"}[*prov]
	if env == "" {
		return fmt.Errorf("--provider %q: want generic, twilio or meta", *prov)
	}
	if *secret == "" {
		*secret = firstOf(getenv(env))
	}
	if *secret == "" {
		return fmt.Errorf("no secret: pass --secret or set %s", env)
	}
	body, err := readPayload(*prov, *file, *id)
	if err != nil {
		return err
	}
	endpoint := *base + "/webhooks/" + *prov
	headers, contentType, err := signHeaders(*prov, *secret, *id, endpoint, body)
	if err != nil {
		return err
	}
	if *headersOnly {
		for _, h := range headers {
			fmt.Fprintf(stdout, "%s: %s\n", h[0], h[1])
		}
		return nil
	}
	fmt.Fprintf(stdout, "curl -sS %s -H 'content-type: %s'", endpoint, contentType)
	for _, h := range headers {
		fmt.Fprintf(stdout, " -H '%s: %s'", h[0], h[1])
	}
	fmt.Fprintf(stdout, " --data-binary %s\n", shellQuote(string(body)))
	return nil
}

// signHeaders computes the provider's signature headers for body posted to endpoint.
func signHeaders(prov, secret, id, endpoint string, body []byte) ([][2]string, string, error) {
	switch prov {
	case "twilio":
		params, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, "", fmt.Errorf("twilio payload is not a form: %w", err)
		}
		return [][2]string{{"X-Twilio-Signature", ingest.SignTwilio(secret, endpoint, params)}}, "application/x-www-form-urlencoded", nil
	case "meta":
		return [][2]string{{"X-Hub-Signature-256", ingest.SignMeta(secret, body)}}, "application/json", nil
	default:
		keys, err := ingest.ParseGenericSecrets([]string{secret})
		if err != nil {
			return nil, "", err
		}
		ts := time.Now().Unix()
		return [][2]string{
			{"webhook-id", id}, {"webhook-timestamp", strconv.FormatInt(ts, 10)},
			{"webhook-signature", ingest.SignGeneric(keys[0], id, ts, body)},
		}, "application/json", nil
	}
}

// readPayload returns the payload to sign: a file, stdin, or an example inbound
// message whose message id is id, so that every signed example is a new message
// rather than a redelivery.
func readPayload(prov, file, id string) ([]byte, error) {
	switch file {
	case "-":
		return io.ReadAll(os.Stdin)
	case "":
	default:
		return os.ReadFile(file)
	}
	now := time.Now().UTC()
	switch prov {
	case "twilio":
		return []byte(url.Values{
			"MessageSid": {id}, "AccountSid": {"AC00000000000000000000000000000000"}, "From": {"+15552223333"},
			"To": {"+15550001111"}, "Body": {"hello from inboxd sign"}, "NumMedia": {"0"}, "SmsStatus": {"received"},
		}.Encode()), nil
	case "meta":
		return fmt.Appendf(nil, `{"object":"whatsapp_business_account","entry":[{"id":"0","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"100000000000001"},"contacts":[{"profile":{"name":"Example"},"wa_id":"15552223333"}],"messages":[{"from":"15552223333","id":%q,"timestamp":"%d","type":"text","text":{"body":"hello from inboxd sign"}}]}}]}]}`,
			id, now.Unix()), nil
	default:
		return fmt.Appendf(nil, `{"type":"message.received","timestamp":%q,"data":{"message_id":%q,"channel":"+15550001111","contact":"+15552223333","text":"hello from inboxd sign"}}`,
			now.Format(time.RFC3339), id), nil
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
