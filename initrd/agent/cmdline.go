package main

import (
	"strings"
)

// param is one kernel command line parameter.
type param struct {
	Key      string
	Value    string
	HasValue bool // "key=value" (possibly empty value) as opposed to a bare "key"
}

// isSpace matches the kernel's isspace() for the ASCII range.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// parseCmdline splits the contents of /proc/cmdline into parameters the same
// way the kernel does (lib/cmdline.c next_arg): parameters are separated by
// whitespace outside double quotes; a double quote at the start of a
// parameter or of its value, and the matching one at its end, are removed
// (so `a="x y"` and `"a=x y"` both give a = `x y`); other quotes are kept.
// Parsing stops at a bare "--" (everything after it belongs to init).
func parseCmdline(s string) []param {
	var params []param
	for {
		// Skip leading whitespace.
		for len(s) > 0 && isSpace(s[0]) {
			s = s[1:]
		}
		if s == "" {
			return params
		}

		quoted, inQuote := false, false
		if s[0] == '"' {
			s = s[1:]
			quoted, inQuote = true, true
		}
		equals := -1
		i := 0
		for ; i < len(s); i++ {
			c := s[i]
			if isSpace(c) && !inQuote {
				break
			}
			if equals < 0 && c == '=' {
				equals = i
			}
			if c == '"' {
				inQuote = !inQuote
			}
		}
		tok, rest := s[:i], s[i:]
		s = rest

		var p param
		if equals < 0 {
			p.Key = tok
			if quoted {
				p.Key = strings.TrimSuffix(p.Key, `"`)
			}
		} else {
			p.Key, p.Value, p.HasValue = tok[:equals], tok[equals+1:], true
			if strings.HasPrefix(p.Value, `"`) {
				p.Value = strings.TrimSuffix(p.Value[1:], `"`)
			} else if quoted {
				p.Value = strings.TrimSuffix(p.Value, `"`)
			}
		}
		if !quoted && p.Key == "--" && !p.HasValue {
			return params
		}
		params = append(params, p)
	}
}

// lookupParam returns the value of the last parameter named key.
func lookupParam(params []param, key string) (p param, ok bool) {
	for i := len(params) - 1; i >= 0; i-- {
		if params[i].Key == key {
			return params[i], true
		}
	}
	return param{}, false
}

// flagEnabled reports whether a boolean parameter is on: a bare "key" or
// key=1/y/yes/true/on.
func flagEnabled(p param, ok bool) bool {
	if !ok {
		return false
	}
	if !p.HasValue {
		return true
	}
	switch strings.ToLower(p.Value) {
	case "1", "y", "yes", "true", "on":
		return true
	}
	return false
}
