package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"inboxd/internal/provider/generic"
	"inboxd/internal/provider/meta"
	"inboxd/internal/provider/twilio"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// event is one webhook that senders deliver until it is acknowledged.
type event struct {
	provider  string
	key       string // external id
	messageID string // the message it must become
	path      string
	ctype     string
	body      string
	sign      func(r *http.Request) // sets the signature headers (per attempt)
}

// newEvent makes the i-th event of a run, rotating through the three providers.
func newEvent(run string, i int) event {
	contact := fmt.Sprintf("1555%07d", i%97)
	switch i % 3 {
	case 0:
		id, msg := fmt.Sprintf("evt-%s-%d", run, i), fmt.Sprintf("m-%s-%d", run, i)
		return genericEvent(id, fmt.Sprintf(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":%q,"channel":"+15550001111","contact":"+%s","text":"hi %d"}}`, msg, contact, i), msg)
	case 1:
		sid := fmt.Sprintf("SM%s%030d", run, i)
		form := url.Values{"MessageSid": {sid}, "AccountSid": {"AC0"}, "From": {"+" + contact}, "To": {"+15550001111"}, "Body": {fmt.Sprintf("hi %d", i)}, "NumMedia": {"0"}}
		return twilioEvent(form, sid)
	default:
		wamid := fmt.Sprintf("wamid.%s.%d", run, i)
		return metaEvent(fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"100"},"contacts":[{"profile":{"name":"C %d"},"wa_id":%q}],"messages":[{"from":%q,"id":%q,"timestamp":"1764064800","type":"text","text":{"body":"hi"}}]}}]}]}`,
			i, contact, contact, wamid), wamid, wamid)
	}
}

func genericEvent(id, body, messageID string) event {
	return event{provider: "generic", key: id, messageID: messageID, path: "/webhooks/generic", ctype: "application/json", body: body,
		sign: func(r *http.Request) {
			h, _ := generic.Headers(genericSecret, id, time.Now(), []byte(body)) // a valid test secret
			for k := range h {
				r.Header.Set(k, h.Get(k))
			}
		}}
}

func twilioEvent(form url.Values, sid string) event {
	sig := twilio.Sign(twilioToken, publicURL+"/webhooks/twilio", form)
	return event{provider: "twilio", key: sid, messageID: sid, path: "/webhooks/twilio", ctype: "application/x-www-form-urlencoded",
		body: form.Encode(), sign: func(r *http.Request) { r.Header.Set("X-Twilio-Signature", sig) }}
}

func metaEvent(body, key, messageID string) event {
	sig := meta.Sign(metaSecret, []byte(body))
	return event{provider: "meta", key: key, messageID: messageID, path: "/webhooks/meta", ctype: "application/json",
		body: body, sign: func(r *http.Request) { r.Header.Set("X-Hub-Signature-256", sig) }}
}

// load delivers events like providers do: each until a 2xx, retrying anything else
// (a 5xx, a timeout, a refused connection) after a pause, on whichever process is up.
type load struct {
	f      *fixture
	client *http.Client
	wg     sync.WaitGroup
	next   int // round robin over processes
	// mayLose: acknowledged events may be missing afterwards (a failover to an
	// asynchronous standby); verify counts them instead of failing.
	mayLose bool

	mu        sync.Mutex
	events    []event
	acked     map[string]bool // by provider/key
	retried   int             // answers other than 2xx, and transport errors
	statuses  map[int]int     // every answer, by status (0: no answer)
	refused   []string        // events answered 4xx: never retried
	gaveUp    []string        // events not acknowledged within giveUpAfter
	maxAnswer time.Duration   // the longest any request waited for its answer
}

// giveUpAfter bounds how long a sender keeps retrying one event.
const giveUpAfter = 90 * time.Second

func (f *fixture) newLoad() *load {
	return &load{f: f, acked: map[string]bool{}, statuses: map[int]int{},
		client: &http.Client{Timeout: 15 * time.Second, // Twilio's timeout
			Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
}

// run sends n events (the i-th made by mk) at rate per second, each delivered until
// acknowledged, and returns at once; wait waits for every delivery.
func (l *load) run(n, rate int, mk func(i int) event) {
	l.wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := range n {
			<-tick.C
			e := mk(i)
			l.mu.Lock()
			l.events = append(l.events, e)
			l.mu.Unlock()
			l.wg.Go(func() { l.deliver(e) })
		}
	})
}

// deliver sends e until it is acknowledged.
func (l *load) deliver(e event) {
	start := time.Now()
	for time.Since(start) < giveUpAfter {
		status := l.send(e)
		switch {
		case status >= 200 && status < 300:
			l.mu.Lock()
			l.acked[e.provider+"/"+e.key] = true
			l.mu.Unlock()
			return
		case status >= 400 && status < 500 && status != http.StatusRequestTimeout:
			l.mu.Lock()
			l.refused = append(l.refused, e.provider+"/"+e.key)
			l.mu.Unlock()
			return
		}
		l.mu.Lock()
		l.retried++
		l.mu.Unlock()
		time.Sleep(250 * time.Millisecond)
	}
	l.mu.Lock()
	l.gaveUp = append(l.gaveUp, e.provider+"/"+e.key)
	l.mu.Unlock()
}

// send makes one attempt on the next live process and returns its status (0: none).
func (l *load) send(e event) int {
	live := l.f.live()
	if len(live) == 0 {
		time.Sleep(100 * time.Millisecond)
		return 0
	}
	l.mu.Lock()
	p := live[l.next%len(live)]
	l.next++
	l.mu.Unlock()
	req, _ := http.NewRequest("POST", p.base+e.path, strings.NewReader(e.body))
	req.Header.Set("Content-Type", e.ctype)
	e.sign(req)
	start := time.Now()
	resp, err := l.client.Do(req)
	took := time.Since(start)
	status := 0
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
	}
	l.mu.Lock()
	l.statuses[status]++
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		l.maxAnswer = max(l.maxAnswer, took)
	}
	l.mu.Unlock()
	return status
}

func (l *load) wait() { l.wg.Wait() }

// counts is what a scenario reports.
type counts struct {
	Scenario     string      `json:"scenario"`
	Sent         int         `json:"sent"`
	Acknowledged int         `json:"acknowledged"`
	Retried      int         `json:"retried"`
	Processed    int         `json:"processed"`
	Lost         int         `json:"lost"`
	Doubled      int         `json:"doubled"`
	Refused      int         `json:"refused,omitempty"`
	MaxAnswerMS  int64       `json:"max_answer_ms"`
	Statuses     map[int]int `json:"statuses"`
}

// verify waits for the queue to settle and checks, for every acknowledged event,
// that it is stored once, processed, and became exactly one message; that nothing is
// pending, processing or dead; and that every event was acknowledged. It logs (and
// reports) the counts.
func (l *load) verify(t *testing.T) counts {
	t.Helper()
	l.wait()
	f := l.f
	ctx := context.Background()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var open int
		if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM inbound_events WHERE state IN ('pending', 'processing')").Scan(&open); err == nil && open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still pending or processing 60s after the load", open)
		}
	}
	stored := map[string]string{} // provider/external id → state
	rows, err := f.pool.Query(ctx, "SELECT provider, external_id, state FROM inbound_events")
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	for rows.Next() {
		var p, k, s string
		rows.Scan(&p, &k, &s)
		stored[p+"/"+k] = s
		events++
	}
	rows.Close()
	messages := map[string]int{}
	rows, err = f.pool.Query(ctx, "SELECT provider, provider_message_id FROM messages")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p, m string
		rows.Scan(&p, &m)
		messages[p+"/"+m]++
	}
	rows.Close()

	l.mu.Lock()
	defer l.mu.Unlock()
	c := counts{Scenario: t.Name(), Sent: len(l.events), Acknowledged: len(l.acked), Retried: l.retried,
		Refused: len(l.refused), MaxAnswerMS: l.maxAnswer.Milliseconds(), Statuses: l.statuses}
	seen := map[string]bool{}
	for _, e := range l.events {
		k := e.provider + "/" + e.key
		if seen[k] || !l.acked[k] {
			continue
		}
		seen[k] = true
		switch m := messages[e.provider+"/"+e.messageID]; {
		case l.mayLose && stored[k] == "" && m == 0:
			c.Lost++ // in the WAL the standby never received
		case stored[k] != "processed" || m == 0:
			c.Lost++
			if c.Lost <= 5 {
				t.Errorf("acknowledged %.60s is %q with %d messages, want processed with one", k, stored[k], m)
			}
		default:
			c.Processed++
			c.Doubled += m - 1
		}
	}
	dead := 0
	for _, s := range stored {
		if s == "dead" {
			dead++
		}
	}
	c.Doubled += max(events-len(stored), 0)
	switch {
	case (c.Lost > 0 && !l.mayLose) || c.Doubled > 0:
		t.Errorf("lost %d, doubled %d", c.Lost, c.Doubled)
	case len(l.gaveUp) > 0:
		t.Errorf("%d events never acknowledged within %s, e.g. %.60s", len(l.gaveUp), giveUpAfter, l.gaveUp[0])
	case dead > 0:
		t.Errorf("%d events dead", dead)
	}
	report(t, c)
	return c
}

// report logs a scenario's counts, and appends them to INBOXD_FAULT_REPORT if set.
func report(t *testing.T, c counts) {
	codes := make([]int, 0, len(c.Statuses))
	for s := range c.Statuses {
		codes = append(codes, s)
	}
	sort.Ints(codes)
	var answers []string
	for _, s := range codes {
		answers = append(answers, fmt.Sprintf("%d×%d", c.Statuses[s], s))
	}
	t.Logf("%s: sent %d, acknowledged %d, retried %d, processed %d, lost %d, doubled %d; longest answer %d ms; answers %s",
		c.Scenario, c.Sent, c.Acknowledged, c.Retried, c.Processed, c.Lost, c.Doubled, c.MaxAnswerMS, strings.Join(answers, " "))
	path := os.Getenv("INBOXD_FAULT_REPORT")
	if path == "" {
		return
	}
	b, _ := json.Marshal(c)
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	defer fh.Close()
	fh.Write(append(b, '\n'))
}
