package provider

import "strings"

// Addresses are normalized so that one contact is one conversation however a provider
// spells the number: "+1 (555) 222-3333", "15552223333" from Meta's wa_id, and
// "whatsapp:+15552223333" from Twilio all become "+15552223333". The API's contact
// filter uses the same function, so a number finds its conversation however it is
// typed.

// E164 returns a phone number in E.164 form ("+" and digits), or s trimmed and
// otherwise unchanged when it is not a phone number (an alphanumeric sender id, a
// user id).
func E164(s string) string {
	s = strings.TrimSpace(s)
	digits := make([]byte, 0, len(s)+1)
	digits = append(digits, '+')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits = append(digits, c)
		case c == '+' && i == 0, c == ' ', c == '-', c == '(', c == ')', c == '.':
		default:
			return s // letters or other symbols: not a phone number
		}
	}
	if n := len(digits) - 1; n < 7 || n > 15 {
		return s
	}
	return string(digits)
}
