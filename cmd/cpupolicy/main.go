// Command cpupolicy inspects Gozen CPU policy blobs on a host.
//
// Usage:
//
//	cpupolicy show <file|->                 dump a policy and its named features
//	cpupolicy diff <a> <b>                  list differing leaves and bits (exit 1 if any)
//	cpupolicy compat <guest> <host>         can a guest that saw <guest> run on <host>?
//	                                        (exit 0 yes, 1 no, listing the missing bits)
//	cpupolicy collect [-o blob]             collect this host's CPUID policy
//	cpupolicy compare-xen-cpuid [-policy NAME] <guest-text> <xen-cpuid-output>
//	                                        compare a guest's policy leaf for leaf with
//	                                        `xen-cpuid -p <domid>` (exit 1 on mismatch)
//
// Policy arguments may be a binary blob, its base64 text, console output
// holding the text between the BEGIN/END markers the guest app prints, or a
// policy dump in xen-cpuid's format (then all-zero leaves are absent). "-"
// reads standard input. Errors exit with status 2.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gozen-dev/gozen/arch/amd64/cpupolicy"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage:
  cpupolicy show <file|->
  cpupolicy diff <a> <b>
  cpupolicy compat <guest> <host>
  cpupolicy collect [-o blob]
  cpupolicy compare-xen-cpuid [-policy NAME] <guest-text> <xen-cpuid-output>
`

// errUsage marks command-line mistakes.
var errUsage = errors.New("bad usage")

// run executes the command line args and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var (
		status int
		err    error
	)
	switch args[0] {
	case "show":
		status, err = cmdShow(args[1:], stdin, stdout)
	case "diff":
		status, err = cmdDiff(args[1:], stdin, stdout)
	case "compat":
		status, err = cmdCompat(args[1:], stdin, stdout)
	case "collect":
		status, err = cmdCollect(args[1:], stdout, stderr)
	case "compare-xen-cpuid":
		status, err = cmdCompareXen(args[1:], stdin, stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	if err != nil {
		fmt.Fprintf(stderr, "cpupolicy: %v\n", err)
		if errors.Is(err, errUsage) {
			fmt.Fprint(stderr, usage)
		}
		return 2
	}
	return status
}

func readArg(name string, stdin io.Reader) ([]byte, error) {
	if name == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("reading standard input: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	return b, nil
}

// parsePolicy accepts any of the forms listed in the package comment.
func parsePolicy(data []byte) (*cpupolicy.Policy, error) {
	var p cpupolicy.Policy
	switch {
	case bytes.HasPrefix(data, []byte(cpupolicy.Magic)):
		if err := p.UnmarshalBinary(data); err != nil {
			return nil, err
		}
		return &p, nil
	case bytes.Contains(data, []byte(cpupolicy.BeginMarker)):
		txt, err := cpupolicy.ExtractText(data)
		if err != nil {
			return nil, err
		}
		if err := p.UnmarshalText(txt); err != nil {
			return nil, err
		}
		return &p, nil
	}
	err := p.UnmarshalText(data)
	if err == nil {
		return &p, nil
	}
	if !errors.Is(err, cpupolicy.ErrBase64) {
		return nil, err // it was base64, but not of a valid blob
	}
	dumps, perr := cpupolicy.ParseXenCPUID(bytes.NewReader(data))
	if perr != nil {
		return nil, perr
	}
	if d, ok := pickDump(dumps, ""); ok {
		return d.Policy, nil
	}
	return nil, fmt.Errorf("not a policy blob, base64 text, marked console output or single xen-cpuid dump (%d dumps found)", len(dumps))
}

// pickDump selects the dump called name, or, if name is empty, the only
// dump, this package's own dump, or the first "Domain N" dump.
func pickDump(dumps []cpupolicy.Dump, name string) (cpupolicy.Dump, bool) {
	if name != "" {
		for _, d := range dumps {
			if d.Name == name {
				return d, true
			}
		}
		return cpupolicy.Dump{}, false
	}
	if len(dumps) == 1 {
		return dumps[0], true
	}
	for _, d := range dumps {
		if d.Name == cpupolicy.DumpName || strings.HasPrefix(d.Name, "Domain ") {
			return d, true
		}
	}
	return cpupolicy.Dump{}, false
}

func load(name string, stdin io.Reader) (*cpupolicy.Policy, error) {
	b, err := readArg(name, stdin)
	if err != nil {
		return nil, err
	}
	p, err := parsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

func loadTwo(args []string, stdin io.Reader, what string) (*cpupolicy.Policy, *cpupolicy.Policy, error) {
	if len(args) != 2 {
		return nil, nil, fmt.Errorf("%w: %s", errUsage, what)
	}
	if args[0] == "-" && args[1] == "-" {
		return nil, nil, fmt.Errorf("%w: only one argument can be standard input", errUsage)
	}
	a, err := load(args[0], stdin)
	if err != nil {
		return nil, nil, err
	}
	b, err := load(args[1], stdin)
	if err != nil {
		return nil, nil, err
	}
	return a, b, nil
}

func cmdShow(args []string, stdin io.Reader, stdout io.Writer) (int, error) {
	if len(args) != 1 {
		return 0, fmt.Errorf("%w: show takes one policy", errUsage)
	}
	p, err := load(args[0], stdin)
	if err != nil {
		return 0, err
	}
	fmt.Fprint(stdout, p.String())
	fmt.Fprintln(stdout, " Features:")
	var cur cpupolicy.Word
	var line []string
	flush := func() {
		if len(line) > 0 {
			fmt.Fprintf(stdout, "  %-24s %s\n", cur.String(), strings.Join(line, " "))
		}
		line = nil
	}
	for _, f := range p.Features() {
		if f.Word != cur {
			flush()
			cur = f.Word
		}
		if f.Name != "" {
			line = append(line, f.Name)
		} else {
			line = append(line, fmt.Sprintf("<%d>", f.Bit))
		}
	}
	flush()
	return 0, nil
}

func cmdDiff(args []string, stdin io.Reader, stdout io.Writer) (int, error) {
	a, b, err := loadTwo(args, stdin, "diff takes two policies")
	if err != nil {
		return 0, err
	}
	ds := cpupolicy.Diff(a, b)
	for _, d := range ds {
		fmt.Fprintln(stdout, d)
	}
	if len(ds) > 0 {
		return 1, nil
	}
	return 0, nil
}

func cmdCompat(args []string, stdin io.Reader, stdout io.Writer) (int, error) {
	g, h, err := loadTwo(args, stdin, "compat takes a guest and a host policy")
	if err != nil {
		return 0, err
	}
	ok, missing := cpupolicy.Compatible(g, h)
	if ok {
		fmt.Fprintln(stdout, "compatible")
		return 0, nil
	}
	fmt.Fprintf(stdout, "incompatible: host lacks %d feature bit(s) the guest saw:\n", len(missing))
	for _, f := range missing {
		fmt.Fprintf(stdout, "  %-24s %s\n", f.Word.String(), f)
	}
	return 1, nil
}

func cmdCollect(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("collect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the binary blob to this file instead of printing")
	if err := fs.Parse(args); err != nil {
		return 0, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() != 0 {
		return 0, fmt.Errorf("%w: collect takes no arguments", errUsage)
	}
	p, err := cpupolicy.Collect()
	if err != nil {
		return 0, err
	}
	if !cpupolicy.CollectsMSRs {
		fmt.Fprintln(stderr, "cpupolicy: note: host collection reads CPUID only; MSRs need ring 0 (the tamago guest reads them)")
	}
	if *out != "" {
		b, err := p.MarshalBinary()
		if err != nil {
			return 0, err
		}
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			return 0, fmt.Errorf("writing blob: %w", err)
		}
		return 0, nil
	}
	txt, err := p.MarshalText()
	if err != nil {
		return 0, err
	}
	fmt.Fprint(stdout, p.String())
	fmt.Fprintf(stdout, "%s\n%s\n%s\n", cpupolicy.BeginMarker, txt, cpupolicy.EndMarker)
	return 0, nil
}

func cmdCompareXen(args []string, stdin io.Reader, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("compare-xen-cpuid", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("policy", "", `which policy of the xen-cpuid output to use (default: the only one, or the first "Domain N")`)
	if err := fs.Parse(args); err != nil {
		return 0, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() != 2 {
		return 0, fmt.Errorf("%w: compare-xen-cpuid takes the guest's output and xen-cpuid's output", errUsage)
	}
	guest, err := load(fs.Arg(0), stdin)
	if err != nil {
		return 0, err
	}
	xb, err := readArg(fs.Arg(1), stdin)
	if err != nil {
		return 0, err
	}
	dumps, err := cpupolicy.ParseXenCPUID(bytes.NewReader(xb))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", fs.Arg(1), err)
	}
	d, ok := pickDump(dumps, *name)
	if !ok {
		var names []string
		for _, d := range dumps {
			names = append(names, fmt.Sprintf("%q", d.Name))
		}
		return 0, fmt.Errorf("%s: no policy to compare with (found: %s); use -policy", fs.Arg(1), strings.Join(names, ", "))
	}
	c := cpupolicy.CompareXen(guest, d.Policy)
	fmt.Fprintf(stdout, "guest vs %s policy: ", d.Name)
	fmt.Fprint(stdout, c)
	if !c.OK() {
		return 1, nil
	}
	return 0, nil
}
