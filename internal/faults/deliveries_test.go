package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"inboxd/internal/delivery/deliverytest"
)

const adminToken = "fault-suite-admin-token-0123456789"

// api calls p's admin API and decodes the answer into v (nil: ignore it).
func (p *proc) api(t *testing.T, method, path, body string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(method, p.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s = %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

func (p *proc) subscribe(t *testing.T, rc *deliverytest.Receiver) int64 {
	t.Helper()
	var sub struct {
		ID     int64
		Secret string
	}
	body := fmt.Sprintf(`{"url": %q, "types": ["conversation.created", "message.created", "message.status_changed"]}`, rc.URL+"/hooks")
	if status := p.api(t, "POST", "/v1/subscriptions", body, &sub); status != 201 {
		t.Fatalf("subscribe: %d", status)
	}
	rc.SetSecret(sub.Secret)
	return sub.ID
}

// feedOrder is every change kept, by conversation, in feed order.
func (f *fixture) feedOrder() (map[int64][]string, int) {
	rows, err := f.pool.Query(context.Background(), `SELECT conversation_id, xid::text || '.' || seq FROM changes ORDER BY xid, seq`)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	out, n := map[int64][]string{}, 0
	for rows.Next() {
		var c int64
		var id string
		if err := rows.Scan(&c, &id); err != nil {
			f.t.Fatal(err)
		}
		out[c] = append(out[c], id)
		n++
	}
	return out, n
}

// checkDelivered waits until every change has been acknowledged by rc, then checks
// that each conversation's changes were acknowledged in feed order, each verified
// with the subscription's secret by the Standard Webhooks library.
func (f *fixture) checkDelivered(t *testing.T, rc *deliverytest.Receiver, within time.Duration) {
	t.Helper()
	want, n := f.feedOrder()
	deadline := time.Now().Add(within)
	for len(rc.Delivered()) < n && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	got := map[int64][]string{}
	for _, r := range rc.Delivered() {
		got[r.ConversationID] = append(got[r.ConversationID], r.ID)
		if !r.Verified {
			t.Errorf("change %s: signature not verified", r.ID)
		}
	}
	bad := 0
	for c, ids := range want {
		if !slices.Equal(got[c], ids) {
			if bad++; bad <= 5 {
				t.Errorf("conversation %d: acknowledged %v, want %v", c, got[c], ids)
			}
		}
	}
	t.Logf("%d changes, %d acknowledged, %d requests in all, %d conversations out of order or incomplete",
		n, len(rc.Delivered()), len(rc.Got()), bad)
}

// TestDeliveriesUnderFaults: two processes deliver the changes of a mixed load
// (three providers, ~290 conversations) to an endpoint that first hangs past
// INBOX_DELIVERY_TIMEOUT, then answers 500 for two seconds, then recovers; one
// process is killed with kill -9 while it has deliveries in flight (hanging). Every change
// is acknowledged at least once, each conversation's in feed order, and the events
// themselves are all processed once (the load's usual checks).
func TestDeliveriesUnderFaults(t *testing.T) {
	f := newFixture(t, setup{procs: 2, env: map[string]string{
		"INBOX_ADMIN_TOKENS": adminToken, "INBOX_DELIVERY_ALLOW_PRIVATE": "true", "INBOX_DELIVERY_TIMEOUT": "1s",
	}})
	rc := deliverytest.New(t)
	var phase atomic.Int32 // 0: hang, 1: 500s, 2: fine
	rc.Answer(func(r *http.Request, _ string, _ int) (int, http.Header) {
		switch phase.Load() {
		case 0:
			<-r.Context().Done()
			return 0, nil
		case 1:
			return http.StatusInternalServerError, nil
		}
		return http.StatusNoContent, nil
	})
	survivor := f.procs[1]
	survivor.subscribe(t, rc)

	l := f.newLoad()
	steady(l, "dl")
	victim := f.procs[0]
	var held int
	// Wide: on a busy machine the survivor may take the first deliveries for a while.
	for deadline := time.Now().Add(30 * time.Second); held == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		f.pool.QueryRow(context.Background(), "SELECT count(*) FROM deliveries WHERE state = 'delivering' AND locked_by LIKE '%/' || $1 || '/%'",
			fmt.Sprint(victim.cmd.Process.Pid)).Scan(&held)
	}
	victim.kill9()
	time.Sleep(time.Second)
	phase.Store(1)
	time.Sleep(2 * time.Second)
	phase.Store(2)
	l.verify(t)
	f.checkDelivered(t, rc, 2*time.Minute)
	if held == 0 {
		t.Error("the killed process held no deliveries: the test proves nothing")
	}
	t.Logf("the killed process held %d deliveries in flight", held)
}

// TestDeliveriesGiveUpAndReplay: an endpoint is down (503) for longer than
// INBOX_DELIVERY_GIVE_UP while a load's changes are delivered to it: its deliveries
// are dead and listed as such, none acknowledged; a replay once it is back delivers
// them all, each conversation's in feed order.
func TestDeliveriesGiveUpAndReplay(t *testing.T) {
	f := newFixture(t, setup{procs: 1, env: map[string]string{
		"INBOX_ADMIN_TOKENS": adminToken, "INBOX_DELIVERY_ALLOW_PRIVATE": "true", "INBOX_DELIVERY_GIVE_UP": "3s",
	}})
	survivor := f.procs[0]
	down := deliverytest.New(t)
	var up atomic.Bool
	down.Answer(func(*http.Request, string, int) (int, http.Header) {
		if up.Load() {
			return http.StatusOK, nil
		}
		return http.StatusServiceUnavailable, nil
	})
	id := survivor.subscribe(t, down)
	path := fmt.Sprintf("/v1/subscriptions/%d", id)
	l2 := f.newLoad()
	l2.run(60, 30, func(i int) event { return newEvent("gu", i) })
	l2.wait()
	var dead struct {
		Data []struct {
			ChangeID string `json:"change_id"`
		}
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		survivor.api(t, "GET", path+"/deliveries?state=dead&limit=200", "", &dead)
		var undelivered int
		f.pool.QueryRow(context.Background(), "SELECT count(*) FROM deliveries WHERE subscription_id = $1 AND state <> 'dead'", id).Scan(&undelivered)
		if len(dead.Data) > 0 && undelivered == 0 {
			break
		}
	}
	if len(dead.Data) == 0 || len(down.Delivered()) != 0 {
		t.Fatalf("dead deliveries %d, acknowledged %d; want all dead, none acknowledged", len(dead.Data), len(down.Delivered()))
	}
	up.Store(true)
	var body bytes.Buffer
	fmt.Fprintf(&body, `{"from": ""}`)
	if status := survivor.api(t, "POST", path+"/replay", body.String(), nil); status != 200 {
		t.Fatalf("replay: %d", status)
	}
	f.checkDelivered(t, down, time.Minute)
	t.Logf("%d deliveries were dead before the replay", len(dead.Data))
}
