//go:build tamago

// Command kvlog shows files on a Gozen disk: it opens the FAT32 file
// system of the domain's first disk (whole disk, MBR or GPT), prints
// config.txt, appends a line to log.txt, prints the log and powers off.
//
// Make the disk in dom0 (mkfs.fat -F 32 on an image, or a partition of
// one) and put config.txt on it, e.g. with mtools:
//
//	truncate -s 64M kvlog.img && mkfs.fat -F 32 kvlog.img
//	echo greeting=hello > config.txt && mcopy -i kvlog.img config.txt ::
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/gozen-dev/gozen/blockfs"
	"github.com/gozen-dev/gozen/drivers/blkfront"
	"github.com/gozen-dev/gozen/platform"
	_ "github.com/gozen-dev/gozen/xenbus/control" // xl shutdown / xl reboot
	"github.com/gozen-dev/gozen/xenbus/device"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	disk, err := firstDisk(ctx)
	if err != nil {
		fail("disk", err)
	}
	fsys, err := blockfs.Open(disk, blockfs.Options{}) // finds the FAT32 volume
	if err != nil {
		fail("open "+disk.Name(), err)
	}
	defer fsys.Close() // flushes the disk

	config, err := fsys.ReadFile("config.txt")
	switch {
	case err == nil:
		fmt.Printf("kvlog: config.txt:\n%s", config)
	case errors.Is(err, fs.ErrNotExist):
		fmt.Println("kvlog: no config.txt")
	default:
		fail("config.txt", err)
	}

	line := fmt.Sprintf("%s booted on %s\n", time.Now().UTC().Format(time.RFC3339), disk.Name())
	if err := fsys.AppendFile("log.txt", []byte(line)); err != nil {
		fail("log.txt", err)
	}
	if err := fsys.Sync(ctx); err != nil { // durable before we print it
		fail("sync", err)
	}
	log, err := fsys.ReadFile("log.txt")
	if err != nil {
		fail("log.txt", err)
	}
	fmt.Printf("kvlog: log.txt:\n%s", log)
}

// firstDisk starts the vbd devices and returns the first connected one.
func firstDisk(ctx context.Context) (*blkfront.Disk, error) {
	mem, err := platform.Domain().Grants()
	if err != nil {
		return nil, err
	}
	drv := &blkfront.Driver{Config: blkfront.Config{
		Events: platform.Domain().Events(), Memory: mem,
		Persistent: true, MaxIndirectSegments: 64, MaxRingOrder: 2,
	}}
	onError := func(e *device.DeviceError) { fmt.Println("kvlog:", e) }
	bus, err := platform.Domain().StartDevices(ctx, onError, drv)
	if err != nil {
		return nil, err
	}
	for _, d := range bus.Devices() {
		if b, ok := d.(*device.Bound); ok {
			if disk, ok := b.Conn().(*blkfront.Disk); ok {
				return disk, nil
			}
		}
	}
	return nil, errors.New("no connected vbd device (is there a disk= line in the xl config?)")
}

func fail(what string, err error) {
	fmt.Printf("kvlog: %s: %v\n", what, err)
	os.Exit(1)
}
