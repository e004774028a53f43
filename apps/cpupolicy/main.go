//go:build tamago

// Command cpupolicy is a Gozen guest that reports the CPU policy its domain
// sees: it collects the CPUID leaves (and the MSRs CPUID implies), prints
// them in xen-cpuid's dump layout, then prints the policy's base64 text form
// between cpupolicy.BeginMarker and cpupolicy.EndMarker lines, wrapped at 76
// columns, so a host can recover the exact blob from the console with
// `cpupolicy show console.log` and compare it with dom0's view using
// `cpupolicy compare-xen-cpuid console.log <(xen-cpuid -p <domid>)`.
//
// With -hold DURATION (xl's extra="-hold 60s") the domain stays alive that
// long after printing, so that dom0 can run xen-cpuid against it; it
// prints "cpupolicy: holding" first and "cpupolicy: done" at the end.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	_ "github.com/gozen-dev/gozen/platform"

	"github.com/gozen-dev/gozen/arch/amd64/cpupolicy"
)

// wrap is the width of the base64 lines printed on the console.
const wrap = 76

func main() {
	hold := flag.Duration("hold", 0, "stay alive this long after printing the policy")
	flag.Parse()
	p, err := cpupolicy.Collect()
	if err != nil {
		fmt.Println("cpupolicy: collect:", err)
		os.Exit(1)
	}
	txt, err := p.MarshalText()
	if err != nil {
		fmt.Println("cpupolicy: marshal:", err)
		os.Exit(1)
	}
	fmt.Print(p.String())
	fmt.Println(cpupolicy.BeginMarker)
	for i := 0; i < len(txt); i += wrap {
		fmt.Println(string(txt[i:min(i+wrap, len(txt))]))
	}
	fmt.Println(cpupolicy.EndMarker)
	fmt.Printf("cpupolicy: %d leaves, %d MSRs, %d bytes\n", p.NumLeaves(), p.NumMSRs(), len(txt)*3/4)
	if *hold > 0 {
		fmt.Println("cpupolicy: holding", *hold)
		time.Sleep(*hold)
	}
	fmt.Println("cpupolicy: done")
}
