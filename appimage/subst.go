package appimage

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Errors of Subst, wrapped with the names concerned.
var (
	// ErrMissing: the template has placeholders that were not given.
	ErrMissing = errors.New("appimage: placeholder not set")
	// ErrUnknown: a value was given for a placeholder the template lacks.
	ErrUnknown = errors.New("appimage: no such placeholder in the template")
	// ErrValue: a value cannot go into an xl string or XML attribute.
	ErrValue = errors.New("appimage: bad placeholder value")
)

var placeholderRE = regexp.MustCompile(`@([a-z][a-z0-9_]*)@`)

// TemplatePlaceholders returns the names of the placeholders in a
// template, sorted, each once.
func TemplatePlaceholders(tmpl string) []string {
	var names []string
	for _, m := range placeholderRE.FindAllStringSubmatch(tmpl, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	sort.Strings(names)
	return names
}

// Subst fills in a template's placeholders (@NAME@) with values. Every
// placeholder must be given and every value must name a placeholder of
// the template; values must be non-empty and free of quotes, backslashes,
// @, <, >, & and control characters (they land inside quoted xl strings
// and XML attributes).
func Subst(tmpl string, values map[string]string) (string, error) {
	have := TemplatePlaceholders(tmpl)
	var missing, unknown []string
	for _, n := range have {
		if _, ok := values[n]; !ok {
			missing = append(missing, n)
		}
	}
	for n := range values {
		if !slices.Contains(have, n) {
			unknown = append(unknown, n)
		}
	}
	sort.Strings(unknown)
	if len(missing) > 0 {
		return "", fmt.Errorf("%w: %s (give each with -set NAME=VALUE)", ErrMissing, strings.Join(missing, ", "))
	}
	if len(unknown) > 0 {
		return "", fmt.Errorf("%w: %s (the template has: %s)", ErrUnknown, strings.Join(unknown, ", "), strings.Join(have, ", "))
	}
	for _, n := range have {
		v := values[n]
		if v == "" {
			return "", fmt.Errorf("%w: %s is empty", ErrValue, n)
		}
		if err := plainText(v); err != nil {
			return "", fmt.Errorf("%w: %s: %v", ErrValue, n, err)
		}
	}
	return placeholderRE.ReplaceAllStringFunc(tmpl, func(s string) string {
		return values[s[1:len(s)-1]]
	}), nil
}
