package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"inboxd/internal/privacy"
	"inboxd/internal/provider/registry"
	"inboxd/internal/readmodel"
)

// conversationsCmd lists conversations, latest activity first: all, or a contact's
// (the address as people type it: "+1 555 123 4567", "15551234567" and
// "+15551234567" are one number).
func conversationsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var f readmodel.ConversationFilter
	var contact string
	var asJSON bool
	fs := cliFlags("conversations", "Lists conversations, latest activity first.\n  inboxd conversations --contact +15551234567", stderr)
	fs.StringVar(&contact, "contact", "", "only this contact's (a phone number in any usual spelling, or a provider's user id; found hashed too, under INBOX_REDACT)")
	fs.StringVar(&f.Provider, "provider", "", "only this provider's: "+strings.Join(registry.Names(), ", "))
	fs.IntVar(&f.Limit, "limit", 20, "how many, at most")
	fs.BoolVar(&asJSON, "json", false, "print JSON lines instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := readmodel.CheckProvider(f.Provider); err != nil { // before connecting: a typo is not a database problem
		return usageError{err}
	}
	if f.Limit < 1 {
		return usageError{fmt.Errorf("--limit must be at least 1, got %d", f.Limit)}
	}
	var subject privacy.Subject
	if contact != "" {
		policy, err := redactionFromEnv(getenv)
		if err != nil {
			return err
		}
		if subject, err = privacy.NewSubject(contact, f.Provider, policy); err != nil {
			return callerError(err, privacy.ErrBadRequest)
		}
		f.Contacts = subject.Forms
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	limit := f.Limit
	f.Limit++ // one more, to know whether some are left out
	list, err := readmodel.ListConversations(ctx, pool, f)
	if err != nil {
		return dbAdvice(err)
	}
	list, more := firstPage(list, limit)
	if more {
		fmt.Fprintf(stderr, "more conversations: these are the %d with the latest activity; raise --limit, or narrow with --contact or --provider\n", limit)
	}
	if asJSON {
		return printLines(stdout, list)
	}
	if len(list) == 0 && contact != "" {
		fmt.Fprintf(stderr, "no conversation with %s: looked up as %s\n", printable(contact), subject.LookedUp())
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tprovider\tchannel\tcontact\tlast_message_at")
	for _, c := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", c.ID, c.Provider, printable(c.ChannelAddress), printable(c.ContactAddress),
			c.LastMessageAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}
