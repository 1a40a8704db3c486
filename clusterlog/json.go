package clusterlog

import (
	"strconv"
	"unicode/utf8"
)

// DumpJSON renders the newest entries (at most max) in upstream's exact layout, newest
// first; with a non-empty user only entries whose ident digest matches it. It walks the
// ring with upstream's rules (so, like upstream, it leaves out the entry whose prev
// points into overwritten space). Unlike upstream the result is always valid JSON: node,
// user and tag are escaped, and in msg a backslash that does not start one of the
// escapes made at ingest (\" or \uXXXX) is doubled. For ordinary entries the bytes are
// identical to upstream's.
func (l *Log) DumpJSON(user string, max uint32) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return dumpJSON(l.ring, user, max)
}

func dumpJSON(r ring, user string, max uint32) []byte {
	var identDigest uint64
	if user = cstring(user); user != "" {
		identDigest = DigestString(user)
	}
	out := []byte("{\n\"data\": [\n")
	var count uint32
	pos := r.cpos()
	for steps := 0; pos != 0 && r.inWindow(pos) && steps < r.maxSteps(); steps++ {
		v, ok := r.entryAt(pos)
		if !ok || r.wrapsIntoNew(pos, v) {
			break
		}
		pos = v.h.prev
		if count >= max {
			break
		}
		if identDigest != 0 && identDigest != v.h.identDigest {
			continue
		}
		e, _ := v.h.strings(v.b, false)
		if count > 0 {
			out = append(out, ",\n"...)
		}
		out = appendEntryJSON(out, &e)
		count++
	}
	if count > 0 {
		out = append(out, '\n')
	}
	return append(out, "]\n}\n"...)
}

// appendEntryJSON renders one entry as upstream's clog_dump_json does.
func appendEntryJSON(out []byte, e *Entry) []byte {
	out = append(out, `{"uid": `...)
	out = strconv.AppendUint(out, uint64(e.UID), 10)
	out = append(out, `, "time": `...)
	out = strconv.AppendUint(out, uint64(e.Time), 10)
	out = append(out, `, "pri": `...)
	out = strconv.AppendUint(out, uint64(e.Priority), 10)
	out = append(out, `, "tag": "`...)
	out = appendJSONName(out, cstring(e.Tag))
	out = append(out, `", "pid": `...)
	out = strconv.AppendUint(out, uint64(e.PID), 10)
	out = append(out, `, "node": "`...)
	out = appendJSONName(out, cstring(e.Node))
	out = append(out, `", "user": "`...)
	out = appendJSONName(out, cstring(e.Ident))
	out = append(out, `", "msg": "`...)
	out = appendJSONMsg(out, cstring(e.Msg))
	return append(out, `"}`...)
}

// appendJSONName escapes a string that had no escaping at ingest.
func appendJSONName(out []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' || c == '"':
			out = append(out, '\\', c)
			i++
		case c < 0x20:
			out = appendControl(out, c)
			i++
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			i += appendUTF8(&out, s[i:])
		}
	}
	return out
}

// appendJSONMsg keeps the escapes utf8_to_ascii made (\" and \uXXXX) and escapes
// everything else that would break JSON.
func appendJSONMsg(out []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && s[i+1] == '"':
			out = append(out, s[i:i+2]...)
			i += 2
		case c == '\\' && isUnicodeEscape(s[i:]):
			out = append(out, s[i:i+6]...)
			i += 6
		case c == '\\' || c == '"':
			out = append(out, '\\', c)
			i++
		case c < 0x20:
			out = appendControl(out, c)
			i++
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			i += appendUTF8(&out, s[i:])
		}
	}
	return out
}

func isUnicodeEscape(s string) bool {
	if len(s) < 6 || s[1] != 'u' {
		return false
	}
	for _, c := range []byte(s[2:6]) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func appendControl(out []byte, c byte) []byte {
	const hex = "0123456789abcdef"
	return append(out, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
}

// appendUTF8 copies one valid UTF-8 character, or writes '?' for an invalid byte (as
// upstream's ingest does), and returns the number of input bytes used.
func appendUTF8(out *[]byte, s string) int {
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n <= 1 {
		*out = append(*out, '?')
		return 1
	}
	*out = append(*out, s[:n]...)
	return n
}
