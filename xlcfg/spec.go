package xlcfg

import (
	"fmt"
	"strings"
)

// ErrSpec is wrapped by every vif or disk spec error.
var ErrSpec = fmt.Errorf("xlcfg: bad spec")

// ParseVif parses a vif spec (xl-network-configuration(5)): a
// comma-separated list of KEY=VALUE items, blanks around items ignored.
// A key given twice is an error.
func ParseVif(spec string) (map[string]string, error) {
	m := map[string]string{}
	if strings.TrimSpace(spec) == "" {
		return m, nil
	}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		k, v, ok := strings.Cut(item, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: vif item %q is not KEY=VALUE", ErrSpec, item)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%w: vif key %s given twice", ErrSpec, k)
		}
		m[k] = v
	}
	return m, nil
}

// diskPositional are the positional parameters of a disk spec, in order.
var diskPositional = []string{"target", "format", "vdev", "access"}

// diskFlags are the disk spec items that stand alone (no =).
var diskFlags = map[string]bool{
	"cdrom": true, "discard": true, "no-discard": true, "direct-io-safe": true,
	"trusted": true, "untrusted": true,
}

// ParseDisk parses a disk spec (xl-disk-configuration(5)) into its
// parameters by name: KEY=VALUE items, flags (e.g. cdrom, stored as "1"),
// positional items (target, format, vdev, access in that order) and a
// final target=, which takes the rest of the spec, commas included. A
// parameter given twice is an error, except an empty positional target
// followed by target= (which xl allows).
func ParseDisk(spec string) (map[string]string, error) {
	m := map[string]string{}
	npos := 0
	rest := spec
	set := func(k, v string) error {
		if old, dup := m[k]; dup && !(k == "target" && old == "") {
			return fmt.Errorf("%w: disk parameter %s given twice", ErrSpec, k)
		}
		m[k] = v
		return nil
	}
	for rest != "" {
		item := rest
		if i := strings.IndexByte(rest, ','); i >= 0 {
			item, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		trimmed := strings.TrimLeft(item, " \t")
		if strings.HasPrefix(trimmed, "target=") {
			// the rest of the spec, commas included
			v := strings.TrimPrefix(trimmed, "target=")
			if rest != "" {
				v += "," + rest
			}
			if err := set("target", strings.TrimSpace(v)); err != nil {
				return nil, err
			}
			break
		}
		item = strings.TrimSpace(item)
		k, v, keyed := strings.Cut(item, "=")
		switch {
		case keyed:
			if k == "" {
				return nil, fmt.Errorf("%w: disk item %q has no key", ErrSpec, item)
			}
			if err := set(k, v); err != nil {
				return nil, err
			}
		case diskFlags[item]:
			if err := set(item, "1"); err != nil {
				return nil, err
			}
		default:
			if npos >= len(diskPositional) {
				return nil, fmt.Errorf("%w: too many positional disk items (%q)", ErrSpec, item)
			}
			if err := set(diskPositional[npos], item); err != nil {
				return nil, err
			}
			npos++
		}
	}
	if m["target"] == "" {
		return nil, fmt.Errorf("%w: disk spec %q has no target", ErrSpec, spec)
	}
	return m, nil
}
