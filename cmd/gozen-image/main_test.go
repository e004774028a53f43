package main

import (
	"strings"
	"testing"
)

func TestSubst(t *testing.T) {
	tmpl := "name = \"a\"\nkernel = \"@kernel@\"\n"
	cases := []struct {
		name       string
		set, extra []string
		want, err  string
	}{
		{"set", []string{"kernel=/k"}, nil, "name = \"a\"\nkernel = \"/k\"\n", ""},
		{"xl override", []string{"kernel=/k"}, []string{`cpus = "1"`, `on_crash="destroy"`},
			"name = \"a\"\nkernel = \"/k\"\n# added by gozen-image subst -xl\ncpus = \"1\"\non_crash=\"destroy\"\n", ""},
		{"missing", nil, nil, "", "placeholder not set: kernel"},
		{"unknown", []string{"kernel=/k", "bridge=xenbr0"}, nil, "", "no such placeholder in the template: bridge"},
		{"not NAME=VALUE", []string{"kernel"}, nil, "", "want NAME=VALUE"},
		{"twice", []string{"kernel=/a", "kernel=/b"}, nil, "", "given twice"},
		{"bad xl", []string{"kernel=/k"}, []string{"cpus = 1 2"}, "", "want one xl setting"},
		{"two xl settings", []string{"kernel=/k"}, []string{"a=1; b=2"}, "", "want one xl setting"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Subst(tmpl, c.set, c.extra)
			if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) || got != c.want {
				t.Fatalf("got %q, %v; want %q, %q", got, err, c.want, c.err)
			}
		})
	}
}
