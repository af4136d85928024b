package console

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"

	"inboxd/internal/privacy"
)

// pageNames are the templates/*.html pages; each is parsed with layout.html.
var pageNames = []string{"login", "error", "overview", "live", "events", "event", "failures", "conversations", "conversation", "subscriptions", "subscription-secret", "subscription-delete", "subscription-edit", "deliveries", "erasures", "erasure-preview", "replay-preview", "replays", "replay"}

var funcs = template.FuncMap{
	// when shows a time (or a *time.Time, nil as nothing) in UTC.
	"when": func(v any) string {
		switch t := v.(type) {
		case time.Time:
			return t.UTC().Format("2006-01-02 15:04:05Z")
		case *time.Time:
			if t != nil {
				return t.UTC().Format("2006-01-02 15:04:05Z")
			}
		}
		return ""
	},
	// removed lists what an erasure removed, the kinds it found none of left out.
	"removed": func(c privacy.Counts) string {
		var parts []string
		for _, k := range []struct {
			n    int64
			what string
		}{{c.Conversations, "conversations"}, {c.Messages, "messages"}, {c.Events, "events"}, {c.PendingStatuses, "parked statuses"}, {c.Changes, "changes"}} {
			if k.n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k.what, k.n))
			}
		}
		if len(parts) == 0 {
			return "nothing"
		}
		return strings.Join(parts, ", ")
	},
	"deref": func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	},
	"clip": clip,
	// endpoint shows a subscription's URL with any password in it masked (a URL's
	// user:password@ is how an endpoint behind basic auth is reached): the list is
	// read-only sessions' too, and only admins may read a subscription's credentials.
	"endpoint": func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil {
			return "(an address that is not a URL)"
		}
		return u.Redacted()
	},
	// seconds shows a number of seconds as a duration, to the millisecond below a
	// second and to the second above.
	"seconds": func(s float64) string {
		d := time.Duration(s * float64(time.Second))
		if d < time.Second {
			return d.Round(time.Millisecond).String()
		}
		return d.Round(time.Second).String()
	},
}

// clip cuts s to at most n bytes (and whole characters), marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

func parsePages() map[string]*template.Template {
	pages := map[string]*template.Template{}
	for _, p := range pageNames {
		pages[p] = template.Must(template.New(p).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", "templates/"+p+".html"))

	}
	return pages
}
