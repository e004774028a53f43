// Command gozen-image makes and uses appliance images of Gozen apps.
// `make image APP=x` runs its build step.
//
//	gozen-image build -app apps/httpd -elf build/httpd.elf [-out build/image/httpd]
//
// writes build/image/httpd/: httpd.elf, httpd.xl.in (xl config template),
// httpd.xml.in (libvirt domain XML, xenpvh) and image.json (the app's
// declared needs, from apps/httpd/gozen.json).
//
//	gozen-image subst -set kernel=/srv/httpd.elf -set bridge=xenbr0 [-xl 'KEY=VALUE']... FILE.in > FILE
//
// fills in a template's placeholders (every one must be set; a name the
// template lacks is an error); -xl appends xl settings, which override
// the template's as xl create's KEY=VALUE arguments do (xl templates only).
//
//	gozen-image trim [-n] build/httpd.elf...
//
// cuts Go's 32 MiB FIPS entropy buffer off what Xen's domain builder must
// back (package elftrim; the Makefile runs it on every guest ELF); -n only
// says what it would do.
//
//	gozen-image symbols [-n] build/httpd.elf...
//
// writes the addresses of the Go runtime variables the guest's zero-page
// release reads (its break) into the image (package imagesyms; the
// Makefile runs it on every guest ELF); -n only says what it would write.
//
//	gozen-image qemu [-check] [-print] [-netdev user,restrict=on] [-disk PATH]... build/image/httpd
//
// runs the image under QEMU's own Xen emulation (QEMU >= 8.0, KVM with
// KVM_CAP_XEN_HVM), the console on stdio; -check only says whether this
// host can, -print prints the QEMU command line without running it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/gozen-dev/gozen/appimage"
	"github.com/gozen-dev/gozen/elftrim"
	"github.com/gozen-dev/gozen/imagesyms"
	"github.com/gozen-dev/gozen/qemuxen"
	"github.com/gozen-dev/gozen/xlcfg"
)

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, " ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  gozen-image build -app apps/APP -elf build/APP.elf [-out build/image/APP]
  gozen-image subst -set NAME=VALUE... [-xl KEY=VALUE...] FILE.in
  gozen-image trim [-n] ELF...
  gozen-image symbols [-n] ELF...
  gozen-image qemu [-check] [-print] [-kvm /dev/kvm] [-qemu BIN] [-netdev BACKEND] [-disk PATH]... IMAGE_DIR`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = build(os.Args[2:])
	case "subst":
		err = subst(os.Args[2:])
	case "trim":
		err = trim(os.Args[2:])
	case "symbols":
		err = symbols(os.Args[2:])
	case "qemu":
		err = runQEMU(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gozen-image:", err)
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		os.Exit(1)
	}
}

func build(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	app := fs.String("app", "", "the app's folder (with gozen.json)")
	elf := fs.String("elf", "", "the app's ELF (make APP=...)")
	out := fs.String("out", "", "the image folder (default build/image/APP)")
	fs.Parse(args)
	if *app == "" || *elf == "" || fs.NArg() != 0 {
		usage()
	}
	if *out == "" {
		*out = filepath.Join("build", "image", filepath.Base(filepath.Clean(*app)))
	}
	im, err := appimage.Build(*app, *elf, *out)
	if err != nil {
		return err
	}
	fmt.Printf("image %s: %s, %s, %s\n", im.Dir, filepath.Base(im.ELF()), filepath.Base(im.XLTemplate()), filepath.Base(im.LibvirtTemplate()))
	fmt.Println("placeholders:")
	for _, p := range im.Manifest.Placeholders(im.App) {
		fmt.Printf("  %-7s %s\n", p.Name, p.Doc)
	}
	fmt.Printf("e.g. gozen-image subst")
	for _, p := range im.Manifest.Placeholders(im.App) {
		fmt.Printf(" -set %s=...", p.Name)
	}
	fmt.Printf(" %s > %s.cfg\n", im.XLTemplate(), im.App)
	return nil
}

// Subst fills in a template; extra are xl settings appended after it.
func Subst(tmpl string, set, extra []string) (string, error) {
	values := map[string]string{}
	for _, s := range set {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return "", fmt.Errorf("-set %q: want NAME=VALUE", s)
		}
		if _, dup := values[k]; dup {
			return "", fmt.Errorf("-set %s given twice", k)
		}
		values[k] = v
	}
	out, err := appimage.Subst(tmpl, values)
	if err != nil {
		return "", err
	}
	if len(extra) > 0 {
		out += "# added by gozen-image subst -xl\n"
		for _, e := range extra {
			line := e + "\n"
			cfg, err := xlcfg.Parse([]byte(line))
			if err != nil || len(cfg.Settings) != 1 {
				return "", fmt.Errorf("-xl %q: want one xl setting KEY=VALUE (strings quoted): %v", e, err)
			}
			out += line
		}
	}
	return out, nil
}

func subst(args []string) error {
	fs := flag.NewFlagSet("subst", flag.ExitOnError)
	var set, extra multi
	fs.Var(&set, "set", "NAME=VALUE for the placeholder @NAME@ (repeat)")
	fs.Var(&extra, "xl", "an xl setting KEY=VALUE appended to an xl config, overriding the template's (repeat)")
	fs.Parse(args)
	if fs.NArg() != 1 {
		usage()
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	if len(extra) > 0 && !strings.HasSuffix(fs.Arg(0), ".xl.in") {
		return fmt.Errorf("-xl applies to xl templates (*.xl.in), not %s", fs.Arg(0))
	}
	out, err := Subst(string(data), set, extra)
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	_, err = os.Stdout.WriteString(out)
	return err
}

func trim(args []string) error {
	fs := flag.NewFlagSet("trim", flag.ExitOnError)
	dry := fs.Bool("n", false, "only say what would be trimmed")
	fs.Parse(args)
	if fs.NArg() == 0 {
		usage()
	}
	for _, path := range fs.Args() {
		do := elftrim.Trim
		if *dry {
			do = elftrim.Plan
		}
		r, err := do(path)
		if err != nil {
			return err
		}
		fmt.Printf("trim %s: %v\n", path, r)
	}
	return nil
}

func symbols(args []string) error {
	fs := flag.NewFlagSet("symbols", flag.ExitOnError)
	dry := fs.Bool("n", false, "only say what would be written")
	fs.Parse(args)
	if fs.NArg() == 0 {
		usage()
	}
	for _, path := range fs.Args() {
		do := imagesyms.Write
		if *dry {
			do = imagesyms.Plan
		}
		r, err := do(path)
		if err != nil {
			return err
		}
		fmt.Printf("symbols %s: %v\n", path, r)
	}
	return nil
}

func runQEMU(args []string) error {
	fs := flag.NewFlagSet("qemu", flag.ExitOnError)
	check := fs.Bool("check", false, "only say whether this host can run QEMU's Xen mode")
	print := fs.Bool("print", false, "print the QEMU command line, do not run it")
	kvm := fs.String("kvm", "/dev/kvm", "the KVM device")
	qemu := fs.String("qemu", "qemu-system-x86_64", "the QEMU binary (8.0 or later)")
	netdev := fs.String("netdev", "user,restrict=on", "QEMU -netdev backend for each vif (without id=), e.g. bridge,br=br0")
	var disks multi
	fs.Var(&disks, "disk", "backing file or device of the image's next disk (repeat)")
	fs.Parse(args)
	host := qemuxen.Host{KVM: *kvm, QEMU: *qemu}
	if *check {
		if err := host.Check(); err != nil {
			return fmt.Errorf("this host cannot run QEMU's Xen mode:\n%w", err)
		}
		fmt.Println("this host can run QEMU's Xen mode")
		return nil
	}
	if fs.NArg() != 1 {
		usage()
	}
	im, err := appimage.OpenImage(fs.Arg(0))
	if err != nil {
		return err
	}
	cfg, err := qemuxen.FromImage(im, *netdev, disks)
	if err != nil {
		return err
	}
	if *print {
		a, err := cfg.Args()
		if err != nil {
			return err
		}
		fmt.Println(shellQuote(append([]string{*qemu}, a...)))
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cmd, err := host.Command(ctx, cfg, os.Stdin, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	return cmd.Run()
}

func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=,./:") == "" {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
