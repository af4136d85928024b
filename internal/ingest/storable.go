package ingest

import (
	"unicode/utf8"
)

// Postgres' jsonb refuses some JSON that providers can send and JSON allows:
//   - the escape \u0000 (text cannot hold NUL): a Twilio Body or a Meta message
//     with a NUL in it;
//   - an unpaired UTF-16 surrogate escape (\ud83d without its low half), which a
//     sender that cuts a string in the middle of an emoji produces;
//   - bytes that are not UTF-8 inside a string;
//   - a number beyond what numeric holds (1e200000), and short numbers that
//     expand to huge ones (1e100000 is stored as 100,001 digits).
//
// A webhook is never refused for these: refusing would lose the message, since
// providers do not retry a 4xx. storable rewrites them instead: a refused character
// becomes U+FFFD (the Unicode replacement character, "�"), so a reader sees that
// something was there; a number whose exponent is beyond ±maxExponent becomes a
// string with its literal text. The signature was checked over the raw bytes before,
// and everything else is stored byte for byte.

// maxExponent is the largest exponent magnitude stored as a number.
const maxExponent = 1000

const replacement = `\ufffd`

// storable returns the JSON document b in a form jsonb accepts. It returns b itself
// (no copy) when nothing needs to change, which is the normal case.
func storable(b []byte) []byte {
	f := fixer{in: b}
	for i := 0; i < len(b); {
		switch c := b[i]; {
		case c == '"':
			i = f.str(i)
		case c == '-' || (c >= '0' && c <= '9'):
			i = f.number(i)
		default:
			i++
		}
	}
	return f.result()
}

// fixer copies its input lazily: only from the first replacement on.
type fixer struct {
	in     []byte
	out    []byte
	copied int // in[:copied] is in out already
}

func (f *fixer) replace(from, to int, with string) {
	if f.out == nil {
		f.out = make([]byte, 0, len(f.in)+16)
	}
	f.out = append(f.out, f.in[f.copied:from]...)
	f.out = append(f.out, with...)
	f.copied = to
}

func (f *fixer) result() []byte {
	if f.out == nil {
		return f.in
	}
	return append(f.out, f.in[f.copied:]...)
}

// str scans the string starting at the quote at i and returns the index after its
// closing quote.
func (f *fixer) str(i int) int {
	b := f.in
	for j := i + 1; j < len(b); {
		switch c := b[j]; {
		case c == '"':
			return j + 1
		case c == '\\' && j+1 < len(b) && b[j+1] == 'u':
			j = f.escape(j)
		case c == '\\':
			j += 2
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && size == 1 {
				f.replace(j, j+1, "\uFFFD")
			}
			j += size
		}
	}
	return len(b)
}

// escape handles the \uXXXX at j and returns the index after it (after both halves
// of a surrogate pair).
func (f *fixer) escape(j int) int {
	code, ok := hex4(f.in, j+2)
	if !ok {
		return j + 2 // not valid JSON; the caller validated it, so this is unreachable
	}
	switch {
	case code == 0:
		f.replace(j, j+6, replacement)
	case code >= 0xD800 && code <= 0xDBFF:
		if low, ok := hex4(f.in, j+8); ok && f.in[j+6] == '\\' && f.in[j+7] == 'u' && low >= 0xDC00 && low <= 0xDFFF {
			return j + 12
		}
		f.replace(j, j+6, replacement)
	case code >= 0xDC00 && code <= 0xDFFF:
		f.replace(j, j+6, replacement)
	}
	return j + 6
}

// hex4 reads four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// number scans the number at i and returns the index after it. A number whose
// exponent is beyond ±maxExponent is quoted.
func (f *fixer) number(i int) int {
	b := f.in
	j, e := i, -1
	for ; j < len(b); j++ {
		c := b[j]
		if c == 'e' || c == 'E' {
			e = j
		} else if !(c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.') {
			break
		}
	}
	if e >= 0 && hugeExponent(b[e+1:j]) {
		f.replace(i, j, `"`+string(b[i:j])+`"`)
	}
	return j
}

// hugeExponent: the digits (after an optional sign) are above maxExponent.
func hugeExponent(exp []byte) bool {
	if len(exp) > 0 && (exp[0] == '+' || exp[0] == '-') {
		exp = exp[1:]
	}
	n := 0
	for _, c := range exp {
		n = n*10 + int(c-'0')
		if n > maxExponent {
			return true
		}
	}
	return false
}
