package ipc

import (
	"bytes"
	"fmt"
	"slices"
	"syscall"
)

// guestProperties renders ops 11 and 13 (status.c:cfs_create_guest_conf_properties_msg)
// for one guest or, with vmid 0, for every guest of the VM list.
func (s *Server) guestProperties(props []string, vmid uint32) (syscall.Errno, []byte) {
	list := s.DB.VMList()
	var out bytes.Buffer
	out.WriteString("{\n")
	first := true
	if vmid >= 100 {
		vm, ok := list.VMs[vmid]
		if !ok {
			return syscall.ENOENT, nil
		}
		conf, err := s.DB.ReadFile(guestConfigPath(vm.Node, vm.Type, vmid))
		if err != nil || len(conf) == 0 {
			return syscall.EIO, nil
		}
		writeFoundProperties(&out, vmid, props, findProperties(conf, props), &first)
	} else {
		ids := make([]uint32, 0, len(list.VMs))
		for id := range list.VMs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			vm := list.VMs[id]
			conf, err := s.DB.ReadFile(guestConfigPath(vm.Node, vm.Type, id))
			if err != nil || len(conf) == 0 {
				continue
			}
			writeFoundProperties(&out, id, props, findProperties(conf, props), &first)
		}
	}
	out.WriteString("\n}\n")
	return 0, out.Bytes()
}

func guestConfigPath(node, typ string, vmid uint32) string {
	dir := typ
	if typ == "qemu" {
		dir = "qemu-server"
	}
	return fmt.Sprintf("nodes/%s/%s/%d.conf", node, dir, vmid)
}

// findProperties scans the current section of a guest config (up to the
// first line starting with '[') for "<prop>:" lines, with upstream's
// matching quirks (status.c _get_property_values): the first byte of a line
// is compared as a signed char against the props' range; a value keeps one
// whitespace character when it has nothing else; the scan stops when the
// number of *repeated* hits reaches the number of props (upstream counts a
// property when it is found again, not when it is first found).
func findProperties(conf []byte, props []string) [][]byte {
	found := make([][]byte, len(props))
	var lo, hi int8 = 'z', 'a'
	for _, p := range props {
		var c int8
		if p != "" {
			c = int8(p[0])
		}
		lo, hi = min(lo, c), max(hi, c)
	}
	count := 0
	// A final line without a newline counts as terminated (upstream appends one).
	for len(conf) > 0 {
		var line []byte
		if i := bytes.IndexByte(conf, '\n'); i >= 0 {
			line, conf = conf[:i], conf[i+1:]
		} else {
			line, conf = conf, nil
		}
		if len(line) == 0 || line[0] == 0 {
			continue
		}
		if line[0] == '[' {
			break
		}
		if c := int8(line[0]); c < lo || c > hi {
			continue
		}
		for i, p := range props {
			if v := propertyValue(line, p); v != nil {
				if found[i] != nil {
					count++
				}
				found[i] = v
			}
		}
		if count == len(props) {
			break
		}
	}
	return found
}

// propertyValue returns the value of line if it is "<prop>:<value>", nil
// otherwise; see findProperties for the quirks kept.
func propertyValue(line []byte, prop string) []byte {
	n := len(prop)
	if len(line) <= n+1 || line[n] != ':' || string(line[:n]) != prop {
		return nil
	}
	start, end := n+1, len(line)-1
	for start < end && line[start] != 0 && isSpace(line[start]) {
		start++
	}
	if line[start] == 0 {
		return nil
	}
	for end > start && isSpace(line[end]) {
		end--
	}
	v := line[start : end+1]
	// the value is a C string: it ends at an embedded NUL
	if i := bytes.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	return v
}

// isSpace is C's isspace in the C locale.
func isSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}

func writeFoundProperties(out *bytes.Buffer, vmid uint32, props []string, values [][]byte, first *bool) {
	opened := false
	for i, v := range values {
		if v == nil {
			continue
		}
		if opened {
			out.WriteByte(',')
		} else {
			if !*first {
				out.WriteString(",\n")
			}
			*first = false
			fmt.Fprintf(out, "\"%d\":{", vmid)
			opened = true
		}
		fmt.Fprintf(out, "\"%s\": \"", props[i])
		for _, c := range v {
			if c == '\\' || c == '"' {
				out.WriteByte('\\')
			}
			out.WriteByte(c)
		}
		out.WriteByte('"')
	}
	if opened {
		out.WriteByte('}')
	}
}
