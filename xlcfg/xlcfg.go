// Package xlcfg parses the domain configuration syntax of Xen's xl
// (xl.cfg(5)): settings `KEY = VALUE` separated by newlines or semicolons,
// `#` comments, values that are strings (single or double quotes), numbers
// or lists of values (nested, trailing comma allowed), and the two spec
// strings that appear in lists: vif specs (xl-network-configuration(5)) and
// disk specs (xl-disk-configuration(5)).
//
// It is the checker for the configs that gozen-image generates, not a
// replacement for libxlu: it accepts the subset xl documents and rejects
// anything else with an error naming the line.
package xlcfg

import (
	"errors"
	"fmt"
	"strings"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("xlcfg: syntax error")

// Kind is the type of a Value.
type Kind int

// The kinds of value xl's syntax has.
const (
	String Kind = iota
	Number
	List
)

// Value is one parsed value: Str holds a string's contents (unquoted) or a
// number's text; List holds a list's items.
type Value struct {
	Kind Kind
	Str  string
	List []Value
}

// Setting is one `KEY = VALUE` with the line it started on.
type Setting struct {
	Key   string
	Value Value
	Line  int
}

// Config is a parsed config file: its settings in file order. A key set
// twice takes its last value, as in xl (and as xl create's KEY=VALUE
// arguments override the file).
type Config struct {
	Settings []Setting
}

// Get returns the last value set for key.
func (c *Config) Get(key string) (Value, bool) {
	for i := len(c.Settings) - 1; i >= 0; i-- {
		if c.Settings[i].Key == key {
			return c.Settings[i].Value, true
		}
	}
	return Value{}, false
}

// Map returns every key's last value.
func (c *Config) Map() map[string]Value {
	m := make(map[string]Value, len(c.Settings))
	for _, s := range c.Settings {
		m[s.Key] = s.Value
	}
	return m
}

// Strings returns the items of a list of strings.
func (v Value) Strings() ([]string, error) {
	if v.Kind != List {
		return nil, fmt.Errorf("xlcfg: not a list")
	}
	out := make([]string, 0, len(v.List))
	for _, it := range v.List {
		if it.Kind != String {
			return nil, fmt.Errorf("xlcfg: list item is not a string")
		}
		out = append(out, it.Str)
	}
	return out, nil
}

// Equal reports whether two values are the same (a number compares by its
// text).
func (v Value) Equal(w Value) bool {
	if v.Kind != w.Kind || v.Str != w.Str || len(v.List) != len(w.List) {
		return false
	}
	for i := range v.List {
		if !v.List[i].Equal(w.List[i]) {
			return false
		}
	}
	return true
}

// String formats the value in xl's syntax.
func (v Value) String() string {
	switch v.Kind {
	case Number:
		return v.Str
	case List:
		items := make([]string, len(v.List))
		for i, it := range v.List {
			items[i] = it.String()
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	return quote(v.Str)
}

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// maxDepth bounds list nesting.
const maxDepth = 16

type parser struct {
	src  string
	pos  int
	line int
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrSyntax, p.line, fmt.Sprintf(format, args...))
}

// skip skips blanks and comments; with newlines it also skips line ends.
func (p *parser) skip(newlines bool) {
	for p.pos < len(p.src) {
		switch c := p.src[p.pos]; {
		case c == ' ' || c == '\t' || c == '\r':
			p.pos++
		case c == '#':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		case c == '\n' && newlines:
			p.line++
			p.pos++
		default:
			return
		}
	}
}

func isIDStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isID(c byte) bool      { return isIDStart(c) || c >= '0' && c <= '9' || c == '.' }

// Parse parses a config file.
func Parse(src []byte) (*Config, error) {
	p := &parser{src: string(src), line: 1}
	cfg := &Config{}
	for {
		p.skip(true)
		for p.pos < len(p.src) && p.src[p.pos] == ';' {
			p.pos++
			p.skip(true)
		}
		if p.pos >= len(p.src) {
			return cfg, nil
		}
		if !isIDStart(p.src[p.pos]) {
			return nil, p.errorf("expected a key, found %q", p.src[p.pos])
		}
		start, line := p.pos, p.line
		for p.pos < len(p.src) && isID(p.src[p.pos]) {
			p.pos++
		}
		key := p.src[start:p.pos]
		p.skip(false)
		if p.pos >= len(p.src) || p.src[p.pos] != '=' {
			return nil, p.errorf("expected = after %s", key)
		}
		p.pos++
		p.skip(false)
		v, err := p.value(0)
		if err != nil {
			return nil, err
		}
		p.skip(false)
		if p.pos < len(p.src) && p.src[p.pos] != '\n' && p.src[p.pos] != ';' {
			return nil, p.errorf("unexpected %q after the value of %s", p.src[p.pos], key)
		}
		cfg.Settings = append(cfg.Settings, Setting{Key: key, Value: v, Line: line})
	}
}

func (p *parser) value(depth int) (Value, error) {
	if p.pos >= len(p.src) {
		return Value{}, p.errorf("expected a value, found the end")
	}
	switch c := p.src[p.pos]; {
	case c == '"' || c == '\'':
		s, err := p.str(c)
		return Value{Kind: String, Str: s}, err
	case c == '[':
		if depth >= maxDepth {
			return Value{}, p.errorf("lists nested too deep")
		}
		p.pos++
		v := Value{Kind: List, List: []Value{}}
		for {
			p.skip(true)
			if p.pos < len(p.src) && p.src[p.pos] == ']' {
				p.pos++
				return v, nil
			}
			it, err := p.value(depth + 1)
			if err != nil {
				return Value{}, err
			}
			v.List = append(v.List, it)
			p.skip(true)
			if p.pos >= len(p.src) {
				return Value{}, p.errorf("unterminated list")
			}
			switch p.src[p.pos] {
			case ',':
				p.pos++
			case ']':
			default:
				return Value{}, p.errorf("expected , or ] in a list, found %q", p.src[p.pos])
			}
		}
	case c >= '0' && c <= '9':
		start := p.pos
		for p.pos < len(p.src) && (isID(p.src[p.pos])) {
			p.pos++
		}
		n := p.src[start:p.pos]
		if !validNumber(n) {
			return Value{}, p.errorf("bad number %q", n)
		}
		return Value{Kind: Number, Str: n}, nil
	default:
		return Value{}, p.errorf("expected a value, found %q", c)
	}
}

func validNumber(n string) bool {
	digits, base := n, 10
	switch {
	case strings.HasPrefix(n, "0x") || strings.HasPrefix(n, "0X"):
		digits, base = n[2:], 16
	case len(n) > 1 && n[0] == '0':
		digits, base = n[1:], 8
	}
	if digits == "" {
		return false
	}
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		var d int
		switch {
		case c >= '0' && c <= '9':
			d = int(c - '0')
		case c >= 'a' && c <= 'f':
			d = int(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = int(c-'A') + 10
		default:
			return false
		}
		if d >= base {
			return false
		}
	}
	return true
}

func (p *parser) str(q byte) (string, error) {
	p.pos++
	var b strings.Builder
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == q:
			p.pos++
			return b.String(), nil
		case c == '\n':
			return "", p.errorf("newline in a string")
		case c == '\\':
			if p.pos+1 >= len(p.src) {
				return "", p.errorf("unterminated string")
			}
			p.pos++
			switch e := p.src[p.pos]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case '\\', '"', '\'':
				b.WriteByte(e)
			default:
				return "", p.errorf("unknown escape \\%c in a string", e)
			}
			p.pos++
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
	return "", p.errorf("unterminated string")
}
