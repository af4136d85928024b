package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"inboxd/internal/ingest"
)

// signCmd signs a payload the way a Standard Webhooks sender does and prints a curl
// command line that posts it, so that the endpoint can be tried by hand.
func signCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inboxd sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secret := fs.String("secret", firstOf(getenv("INBOX_GENERIC_SECRETS")), "whsec_… secret (default: the first of INBOX_GENERIC_SECRETS)")
	id := fs.String("id", fmt.Sprintf("msg_%d", time.Now().UnixNano()), "webhook-id (the event's external id)")
	url := fs.String("url", strings.TrimRight(or(getenv("INBOX_PUBLIC_URL"), "http://localhost:8080"), "/")+"/webhooks/generic", "endpoint to print in the curl line")
	file := fs.String("file", "", "payload file ('-' for stdin; default: an example message.received)")
	headersOnly := fs.Bool("headers", false, "print only the three headers")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: inboxd sign [flags]\n\nPrints a signed curl command for /webhooks/generic.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *secret == "" {
		return fmt.Errorf("no secret: pass --secret whsec_… or set INBOX_GENERIC_SECRETS")
	}
	keys, err := ingest.ParseGenericSecrets([]string{*secret})
	if err != nil {
		return err
	}
	body, err := readPayload(*file, *id)
	if err != nil {
		return err
	}
	ts := time.Now().Unix()
	sig := ingest.SignGeneric(keys[0], *id, ts, body)
	if *headersOnly {
		fmt.Fprintf(stdout, "webhook-id: %s\nwebhook-timestamp: %d\nwebhook-signature: %s\n", *id, ts, sig)
		return nil
	}
	fmt.Fprintf(stdout, "curl -sS %s -H 'content-type: application/json' -H 'webhook-id: %s' -H 'webhook-timestamp: %s' -H 'webhook-signature: %s' --data-binary %s\n",
		*url, *id, strconv.FormatInt(ts, 10), sig, shellQuote(string(body)))
	return nil
}

// readPayload returns the payload to sign: a file, stdin, or an example inbound
// message whose message_id is the webhook id, so that every signed example is a new
// message rather than a redelivery.
func readPayload(file, id string) ([]byte, error) {
	switch file {
	case "":
		return fmt.Appendf(nil, `{"type":"message.received","timestamp":%q,"data":{"message_id":%q,"channel":"+15550001111","contact":"+15552223333","text":"hello from inboxd sign"}}`,
			time.Now().UTC().Format(time.RFC3339), id), nil
	case "-":
		return io.ReadAll(os.Stdin)
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
