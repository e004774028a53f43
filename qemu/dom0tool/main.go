//go:build linux

// Command dom0tool is the rig's helper inside the tier-B Linux dom0 (a
// static Linux binary the harness adds to dom0's initramfs).
//
//	dom0tool now                   print the wall clock in Unix nanoseconds
//	dom0tool blob FILE N SEED      write the first N bytes of the test stream of SEED to FILE
//	dom0tool fetch URL N SEED      GET URL, check that the body is the first N bytes of the test
//	                               stream of SEED; print "GOZEN-FETCH PASS|FAIL url ..." with MB/s
//	dom0tool serveblob ADDR N SEED serve /blob (N bytes of the test stream of SEED) and /quit on ADDR
//	dom0tool hload URL CONC SECS   GET URL from CONC keep-alive connections for SECS seconds; print req/s
//	dom0tool proxy LISTEN TARGET   relay TCP connections from LISTEN to TARGET until killed
//	dom0tool get URL               GET URL and print the body (for small control requests)
//	dom0tool udpecho ADDR          echo UDP datagrams on ADDR until killed
//	dom0tool dns ADDR NAME=IP...   answer A queries for NAME with IP on ADDR (UDP) until killed
//	dom0tool datacheck FILE N SEED check blktest's data (1 MiB chunks of the test streams SEED+i)
//	dom0tool zero FILE OFF N       check that a range of FILE reads as zeros
//	dom0tool fatput IMG NAME TEXT  write TEXT as file NAME of the FAT32 image IMG
//	dom0tool fatcat IMG NAME       print file NAME of the FAT32 image IMG
//	dom0tool fatcrc IMG NAME       print the size and CRC-32 of file NAME of IMG
//	dom0tool blkbench DEV N        O_DIRECT sequential write/read of N bytes and 4 KiB random reads
//	dom0tool pinggap HOST SECS MS STOP          ICMP echo every MS ms until file STOP exists; longest gap between replies
//	dom0tool keepalive URL SECS MS [STOP]  GET URL every MS ms for SECS s (or until file STOP exists)
//	                               over one keep-alive connection;
//	                               print requests, errors, dials and the longest gap
//	dom0tool seqcheck FILE N       check the first N records qemu/guests/survive wrote to FILE
//	dom0tool xsread PATH           print xenstore node PATH (relative: under the domain's home)
//	dom0tool cputime NAME SECS     print the CPU seconds domain NAME used over SECS seconds
//	                               (from xl list), as "GOZEN-CPUTIME NAME used over secs"
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "now":
		fmt.Println(time.Now().UnixNano())
	case "blob":
		err = blob(os.Args[2:])
	case "fetch":
		err = fetch(os.Args[2:])
	case "serveblob":
		err = serveBlob(os.Args[2:])
	case "hload":
		err = httpLoad(os.Args[2:])
	case "proxy":
		err = proxy(os.Args[2:])
	case "get":
		err = get(os.Args[2:])
	case "udpecho":
		err = udpEcho(os.Args[2:])
	case "dns":
		err = dnsServe(os.Args[2:])
	case "datacheck":
		err = dataCheck(os.Args[2:])
	case "zero":
		err = zeroCheck(os.Args[2:])
	case "fatput":
		err = fatPut(os.Args[2:])
	case "fatcat":
		err = fatCat(os.Stdout, os.Args[2:])
	case "fatcrc":
		err = fatCRC(os.Stdout, os.Args[2:])
	case "blkbench":
		err = blkBench(os.Args[2:])
	case "pinggap":
		err = pingGap(os.Args[2:])
	case "keepalive":
		err = keepAlive(os.Args[2:])
	case "seqcheck":
		err = seqCheck(os.Args[2:])
	case "xsread":
		err = xsRead(os.Args[2:])
	case "cputime":
		err = cpuTime(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "dom0tool: unknown command", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dom0tool:", os.Args[1]+":", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: dom0tool now | blob FILE N SEED | fetch URL N SEED | serveblob ADDR N SEED | hload URL CONC SECS | proxy LISTEN TARGET | get URL | udpecho ADDR | dns ADDR NAME=IP... | datacheck FILE N SEED | zero FILE OFF N | fatput IMG NAME TEXT | fatcat IMG NAME | fatcrc IMG NAME | blkbench DEV N | pinggap HOST SECS MS STOP | keepalive URL SECS MS [STOP] | seqcheck FILE N | xsread PATH | cputime NAME SECS")
	os.Exit(2)
}
