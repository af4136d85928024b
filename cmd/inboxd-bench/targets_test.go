package main

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseTargets: --targets is refused, or read as systems that targetNames
// lists, which written back as a list read the same.
func FuzzParseTargets(f *testing.F) {
	f.Add("inboxd,river-batched")
	f.Add(strings.Join(targetNames, ","))
	f.Add(" inboxd-batch1 , river-native")
	f.Add("river-")
	f.Add("")
	f.Fuzz(func(t *testing.T, list string) {
		got, err := parseTargets(list)
		if err != nil {
			return
		}
		var names []string
		for _, tg := range got {
			if !slices.Contains(targetNames, tg.name) {
				t.Fatalf("parseTargets(%q) took %q, which targetNames does not list", list, tg.name)
			}
			names = append(names, tg.name)
		}
		again, err := parseTargets(strings.Join(names, ","))
		if err != nil || !slices.EqualFunc(again, got, func(a, b target) bool {
			return a.name == b.name && a.river == b.river && slices.Equal(a.env, b.env) && a.workers == b.workers
		}) {
			t.Fatalf("parseTargets(%q) = %v, but %q reads as %v, %v", list, got, strings.Join(names, ","), again, err)
		}
	})
}

// FuzzParseInts: a list of numbers is refused, or read as positive numbers, which
// written back read the same.
func FuzzParseInts(f *testing.F) {
	f.Add("1000,3000")
	f.Add(" 5 , 7")
	f.Add("0")
	f.Add("1,,2")
	f.Fuzz(func(t *testing.T, list string) {
		got, err := parseInts("rates", list)
		if err != nil {
			return
		}
		var s []string
		for _, n := range got {
			if n <= 0 {
				t.Fatalf("parseInts(%q) = %v: not positive", list, got)
			}
			s = append(s, strconv.Itoa(n))
		}
		if again, err := parseInts("rates", strings.Join(s, ",")); err != nil || !slices.Equal(again, got) {
			t.Fatalf("parseInts(%q) = %v, but it reads back as %v, %v", list, got, again, err)
		}
	})
}
