//go:build tamago

// Command shell is a tiny interactive appliance: it reads lines from
// os.Stdin (the Xen console's input, so `xl console` types into it) and
// answers them. Try "help".
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus/control"
)

const help = `commands:
  echo WORDS   print WORDS
  time         the guest's wall clock and uptime
  mem          Go heap and domain memory
  xs PATH      read a xenstore node (relative to the domain's home)
  help         this text
  exit         power the domain off`

var started = time.Now()

func main() {
	if err := platform.Domain().ConnectStdin(); err != nil {
		fmt.Println("shell:", err)
		return
	}
	fmt.Println("shell: Gozen shell ready; type help")
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		if err := sc.Err(); err != nil {
			fmt.Println("shell: stdin:", err)
		}
		close(lines)
	}()
	ctx := control.Context()
	for {
		fmt.Print("gozen> ")
		select {
		case <-ctx.Done():
			fmt.Println("\nshell:", context.Cause(ctx))
			return
		case line, ok := <-lines:
			if !ok {
				fmt.Println("shell: end of input")
				return
			}
			if !run(strings.TrimSpace(line)) {
				return
			}
		}
	}
}

// run answers one line; false ends the shell.
func run(line string) bool {
	cmd, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	switch cmd {
	case "":
	case "echo":
		fmt.Println(arg)
	case "time":
		fmt.Printf("%s (up %v)\n", time.Now().UTC().Format(time.RFC3339Nano), time.Since(started).Round(time.Millisecond))
	case "mem":
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		fmt.Printf("heap in use %d KiB, from the OS %d KiB, GC cycles %d; domain RAM %d MiB\n",
			m.HeapInuse>>10, m.Sys>>10, m.NumGC, boot.Start.RAMTotal()>>20)
	case "xs":
		xs, err := platform.Domain().Store()
		if err != nil {
			fmt.Println("xs:", err)
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := xs.ReadString(ctx, arg)
		cancel()
		if err != nil {
			fmt.Println("xs:", err)
		} else {
			fmt.Printf("%s = %q\n", arg, v)
		}
	case "help":
		fmt.Println(help)
	case "exit", "quit":
		fmt.Println("shell: bye")
		return false
	default:
		fmt.Printf("shell: unknown command %q (try help)\n", cmd)
	}
	return true
}
