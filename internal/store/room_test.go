package store_test

import (
	"context"
	"strings"
	"testing"

	"inboxd/internal/pgtest"
	"inboxd/internal/store"
)

// TestRoom: the server's room is read (the test server's max_connections less those
// reserved, and at least this test's connection open), and a process is short of it
// when it alone wants more, or more than the others leave; its own open
// connections are not counted twice.
func TestRoom(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	r, err := store.ReadRoom(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	if r.Limit < 1 || r.Open < 1 || r.Open > r.Limit+10 {
		t.Fatalf("room %+v, want a positive limit and this connection open", r)
	}
	for _, tc := range []struct {
		room       store.Room
		want, ours int
		short      string
	}{
		{store.Room{Limit: 97, Open: 10}, 32, 4, ""},
		{store.Room{Limit: 97, Open: 69}, 32, 4, ""}, // 65 others + 32 = 97
		{store.Room{Limit: 97, Open: 70}, 32, 4, "with the 66 others open the server accepts only 97"},
		{store.Room{Limit: 97, Open: 3}, 98, 3, "more than the 97 the server accepts"},
	} {
		if got := tc.room.Short(tc.want, tc.ours); tc.short == "" && got != "" || !strings.Contains(got, tc.short) {
			t.Errorf("%+v.Short(%d, %d) = %q, want %q", tc.room, tc.want, tc.ours, got, tc.short)
		}
	}
}
