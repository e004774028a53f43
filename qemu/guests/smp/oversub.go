//go:build tamago

package main

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
)

// oversub makes the runtime start more Ms than there are vCPUs, as it
// does on its own after some stop-the-worlds, and checks that the vCPUs
// host them (smp.Hosting): a goroutine locked to its thread
// (runtime.LockOSThread: the runtime starts its template thread, and
// the locked goroutine's M sleeps whenever it waits, handing its P to
// another M) ping-pongs with main, then goroutines on every vCPU
// allocate (collections stop and restart the world), and the workers
// must again run on every vCPU. Every step must end within the
// watchdog's two minutes, the runtime must have started Ms beyond one
// per vCPU, and the vCPUs must have switched between them.
func oversub(n int) (string, error, string) {
	defer watchdog("oversub", 2*time.Minute).Stop()
	on, _, _ := smp.Hosting(n)
	if !on {
		return "oversub", errors.New("hosting is off (see the smp: line at boot)"), ""
	}
	locked := make(chan int)
	back := make(chan int)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for v := range locked {
			time.Sleep(100 * time.Microsecond)
			back <- v + 1
		}
		close(back)
	}()
	const rounds = 200
	for i := 0; i < rounds; i++ {
		locked <- i
		if v := <-back; v != i+1 {
			return "oversub", fmt.Errorf("locked goroutine answered %d to %d", v, i), ""
		}
	}
	close(locked)
	<-back
	_, err, allocDetail := alloc(n)
	if err != nil {
		return "oversub", fmt.Errorf("alloc after the locked goroutine: %w", err), ""
	}
	_, err, workDetail := workers(n)
	_, extra, sw := smp.Hosting(n)
	var total uint64
	for _, s := range sw {
		total += s
	}
	detail := fmt.Sprintf("extra Ms=%d switches=%v; locked ping-pong %d rounds; then alloc %s; workers %s", extra, sw, rounds, allocDetail, workDetail)
	switch {
	case err != nil:
		err = fmt.Errorf("workers: %w (%s)", err, detail)
	case extra == 0:
		err = fmt.Errorf("the runtime started no M beyond one per vCPU (%s)", detail)
	case total == 0:
		err = fmt.Errorf("no vCPU switched between Ms (%s)", detail)
	}
	return "oversub", err, detail
}
